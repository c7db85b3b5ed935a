//! A topic's existence and partitions, asked of the cluster.

use std::time::Duration;

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError as ClientError,
    types::RDKafkaErrorCode,
};

use crate::{ErrorKind, KafkaError, KafkaSettings};

/// What the cluster said of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: u32,
}

/// Asks the cluster for `topic`'s metadata, waiting at most `timeout`: an unreachable
/// broker, a topic that does not exist and a refused authorization each come back as
/// their own [`KafkaError`].
pub fn check_topic(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<TopicInfo, KafkaError> {
    // A consumer's metadata request: with allow.auto.create.topics=false it never
    // makes a broker that auto-creates topics create the one it asks about.
    let client: BaseConsumer =
        settings
            .consumer_config(None)
            .create()
            .map_err(|source| KafkaError::Client {
                what: "client creation",
                source,
            })?;
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| classify(settings, topic, source))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(KafkaError::MissingTopic {
            topic: topic.to_owned(),
            brokers: settings.brokers.clone(),
        });
    };
    if let Some(error) = found.error() {
        let code = RDKafkaErrorCode::from(error);
        return Err(match ErrorKind::of_code(code) {
            ErrorKind::Authorization => KafkaError::Authorization {
                topic: topic.to_owned(),
                brokers: settings.brokers.clone(),
                code,
            },
            ErrorKind::MissingTopic => KafkaError::MissingTopic {
                topic: topic.to_owned(),
                brokers: settings.brokers.clone(),
            },
            _ => KafkaError::Client {
                what: "metadata request",
                source: ClientError::MetadataFetch(code),
            },
        });
    }
    if found.partitions().is_empty() {
        return Err(KafkaError::MissingTopic {
            topic: topic.to_owned(),
            brokers: settings.brokers.clone(),
        });
    }
    Ok(TopicInfo {
        topic: topic.to_owned(),
        partitions: u32::try_from(found.partitions().len()).unwrap_or(u32::MAX),
    })
}

/// A metadata request's failure, as what it means.
fn classify(settings: &KafkaSettings, topic: &str, source: ClientError) -> KafkaError {
    match ErrorKind::of(&source) {
        ErrorKind::Unreachable => KafkaError::Unreachable {
            brokers: settings.brokers.clone(),
            source,
        },
        ErrorKind::Authorization => KafkaError::Authorization {
            topic: topic.to_owned(),
            brokers: settings.brokers.clone(),
            code: source
                .rdkafka_error_code()
                .unwrap_or(RDKafkaErrorCode::Authentication),
        },
        ErrorKind::MissingTopic => KafkaError::MissingTopic {
            topic: topic.to_owned(),
            brokers: settings.brokers.clone(),
        },
        _ => KafkaError::Client {
            what: "metadata request",
            source,
        },
    }
}
