//! For tests of other crates (feature `test-support`): a [`Batcher`] producing to
//! librdkafka's in-process mock cluster, as ingest's own wiring would build it.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tidemark_runtime::backpressure::Backpressure;

use crate::{Batcher, BatcherConfig, ProducerHandle};

/// A mock cluster with `topic` of `partitions`, and a batcher producing to it (linger
/// 5 ms). Keep the cluster alive as long as the batcher.
pub fn mock_batcher(
    topic: &str,
    partitions: i32,
    ack_timeout: Duration,
    backpressure: Option<Arc<dyn Backpressure>>,
) -> (MockCluster<'static, DefaultProducerContext>, Batcher) {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(topic, partitions, 1).unwrap();
    let producer = Arc::new(
        ProducerHandle::new(tidemark_runtime::kafka::producer_config(
            &mock.bootstrap_servers(),
            ack_timeout,
        ))
        .unwrap(),
    );
    let (batcher, _tasks) = Batcher::start(
        producer,
        BatcherConfig {
            topic: topic.into(),
            partitions,
            linger: Duration::from_millis(5),
            ack_timeout,
            backpressure,
        },
    );
    (mock, batcher)
}
