//! The Kafka producer behind the batcher, replaced by a fresh one when it becomes
//! unusable: librdkafka reports a fatal error, or the broker rejects its producer id or
//! epoch (seen after an outage long enough for batches to time out). A new producer
//! gets a new producer id; librdkafka documents recreating the producer as the remedy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};

use crate::telemetry;

pub struct ProducerHandle {
    config: ClientConfig,
    current: RwLock<FutureProducer>,
    broken: AtomicBool,
}

impl ProducerHandle {
    pub fn new(config: ClientConfig) -> rdkafka::error::KafkaResult<Self> {
        let producer = config.create()?;
        Ok(Self {
            config,
            current: RwLock::new(producer),
            broken: AtomicBool::new(false),
        })
    }

    /// A usable producer: the current one, or a fresh one if it was found broken.
    pub fn get(&self) -> FutureProducer {
        let current = self.current.read().expect("producer lock").clone();
        let fatal = current.client().fatal_error();
        if !self.broken.swap(false, Ordering::AcqRel) && fatal.is_none() {
            return current;
        }
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                telemetry::producer_replaced(&fatal);
                *self.current.write().expect("producer lock") = fresh.clone();
                fresh
            }
            Err(e) => {
                telemetry::producer_not_replaced(&e);
                self.broken.store(true, Ordering::Release);
                current
            }
        }
    }

    /// Notes a failed delivery; errors that leave the producer unusable mark it broken.
    pub fn report(&self, error: &KafkaError) {
        let code = match error {
            KafkaError::MessageProduction(code) => Some(*code),
            other => other.rdkafka_error_code(),
        };
        if matches!(
            code,
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::Fatal
            )
        ) {
            self.broken.store(true, Ordering::Release);
        }
    }
}
