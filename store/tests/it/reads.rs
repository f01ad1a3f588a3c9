//! Reads of `buckets` and `series` ([`tidemark_store::reads`]).

use std::collections::BTreeMap;

use sqlx::PgPool;
use tidemark_model::Bucket;
use tidemark_store::db::fresh_test_database;
use tidemark_store::reads::{recent_buckets, series_buckets, SeriesFilter, ServiceBucket};

async fn insert(pool: &PgPool, id: i64, service: &str, tags: &str, hour_ms: i64) {
    sqlx::query("INSERT INTO series (id, service, metric, tags) VALUES ($1, $2, 'm', $3::jsonb)")
        .bind(id)
        .bind(service)
        .bind(tags)
        .execute(pool)
        .await
        .unwrap();
    let mut bucket = Bucket::default();
    bucket.add(2.0, 3, false, hour_ms + 1);
    sqlx::query(
        "INSERT INTO buckets (series_id, hour, count, error_count, sum, min, max, last_at, sketch) \
         VALUES ($1, to_timestamp($2 / 1000.0), 3, 0, 6, 2, 2, to_timestamp($3 / 1000.0), $4)",
    )
    .bind(id)
    .bind(hour_ms)
    .bind(hour_ms + 1)
    .bind(bucket.sketch.to_bytes())
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn recent_buckets_list_every_service() {
    let pool = fresh_test_database().await.1;
    let hour = 100 * 3_600_000;
    insert(&pool, 1, "fresh", "{}", hour).await;
    insert(&pool, 2, "old", "{}", hour - 5 * 3_600_000).await;
    let mut rows = recent_buckets(&pool, None, [hour - 3_600_000, hour])
        .await
        .unwrap();
    rows.sort_by(|a, b| (&a.service, &a.metric).cmp(&(&b.service, &b.metric)));
    let seen: Vec<(&str, &str, u64)> = rows
        .iter()
        .map(|r| (r.service.as_str(), r.metric.as_str(), r.bucket.count))
        .collect();
    assert_eq!(seen, [("fresh", "", 0), ("fresh", "m", 3), ("old", "", 0)]);
    let one = recent_buckets(&pool, Some("old"), [hour - 3_600_000, hour])
        .await
        .unwrap();
    assert_eq!(one, [ServiceBucket::listing("old".into(), hour)]);
}

#[tokio::test]
async fn series_buckets_filter_by_tags_and_cap_the_rows() {
    let pool = fresh_test_database().await.1;
    let hour = 100 * 3_600_000;
    insert(&pool, 1, "svc", r#"{"region": "eu", "host": "a"}"#, hour).await;
    insert(&pool, 2, "svc", r#"{"region": "us"}"#, hour).await;
    let eu = BTreeMap::from([("region".to_owned(), "eu".to_owned())]);
    let filter = SeriesFilter {
        service: "svc",
        metric: "m",
        tags: &eu,
        from_ms: hour,
        to_ms: hour + 1,
    };
    let rows = series_buckets(&pool, &filter, 10).await.unwrap().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].series_id, rows[0].hour_ms), (1, hour));
    assert_eq!(rows[0].bucket.count, 3);
    let any = BTreeMap::new();
    let all = SeriesFilter {
        tags: &any,
        ..filter
    };
    assert_eq!(
        series_buckets(&pool, &all, 2).await.unwrap().unwrap().len(),
        2
    );
    assert_eq!(series_buckets(&pool, &all, 1).await.unwrap(), None);
}
