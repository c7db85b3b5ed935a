//! Typed errors, and the kinds they are counted by.

use rdkafka::{error::KafkaError as ClientError, types::RDKafkaErrorCode};

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// A setting is malformed.
    #[error("{key} {value:?} {reason}")]
    InvalidSetting {
        /// Which setting.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No broker answered.
    #[error("no Kafka broker of {brokers} answered (is it running, is the address right?)")]
    Unreachable {
        /// The bootstrap brokers.
        brokers: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The topic does not exist (flowexporter never creates topics: their partitions,
    /// replication and retention are the operator's choice).
    #[error(
        "Kafka topic {topic:?} does not exist on {brokers}; create it first (see docs/kafka.md)"
    )]
    MissingTopic {
        /// The topic.
        topic: String,
        /// The bootstrap brokers.
        brokers: String,
    },
    /// The brokers refused the credentials or the access.
    #[error("Kafka refused access to topic {topic:?} on {brokers}: {code}")]
    Authorization {
        /// The topic.
        topic: String,
        /// The bootstrap brokers.
        brokers: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// Another error of the client.
    #[error("Kafka {what} failed")]
    Client {
        /// What was being done.
        what: &'static str,
        /// The client's error.
        #[source]
        source: ClientError,
    },
}

impl KafkaError {
    /// The kind this error is counted as.
    pub fn kind(&self) -> ErrorKind {
        match self {
            KafkaError::InvalidSetting { .. } => ErrorKind::Other,
            KafkaError::Unreachable { .. } => ErrorKind::Unreachable,
            KafkaError::MissingTopic { .. } => ErrorKind::MissingTopic,
            KafkaError::Authorization { .. } => ErrorKind::Authorization,
            KafkaError::Client { source, .. } => ErrorKind::of(source),
        }
    }
}

/// The kinds Kafka errors are counted by (metric label `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No broker reachable, a connection lost, a request timed out.
    Unreachable,
    /// The topic or partition does not exist.
    MissingTopic,
    /// Authentication failed or access was refused.
    Authorization,
    /// A message larger than the broker or topic allows.
    MessageTooLarge,
    /// The client's queue is full (the brokers are slower than the input).
    QueueFull,
    /// The idempotent producer hit a fatal error (it is rebuilt).
    Fatal,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Unreachable,
        ErrorKind::MissingTopic,
        ErrorKind::Authorization,
        ErrorKind::MessageTooLarge,
        ErrorKind::QueueFull,
        ErrorKind::Fatal,
        ErrorKind::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::MissingTopic => "missing_topic",
            ErrorKind::Authorization => "authorization",
            ErrorKind::MessageTooLarge => "message_too_large",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::Fatal => "fatal",
            ErrorKind::Other => "other",
        }
    }

    /// Its position in [`ALL`](ErrorKind::ALL).
    pub fn index(self) -> usize {
        ErrorKind::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or(ErrorKind::ALL.len() - 1)
    }

    /// The kind of a client error.
    pub fn of(error: &ClientError) -> ErrorKind {
        match error.rdkafka_error_code() {
            Some(code) => ErrorKind::of_code(code),
            None => ErrorKind::Other,
        }
    }

    /// The kind of an error code.
    pub fn of_code(code: RDKafkaErrorCode) -> ErrorKind {
        use RDKafkaErrorCode as C;
        match code {
            C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::OperationTimedOut
            | C::MessageTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::Resolve
            | C::BrokerNotAvailable
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::NotCoordinator
            | C::CoordinatorNotAvailable => ErrorKind::Unreachable,
            C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => {
                ErrorKind::MissingTopic
            }
            C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication
            | C::TransactionalIdAuthorizationFailed => ErrorKind::Authorization,
            C::MessageSizeTooLarge | C::InvalidMessageSize => ErrorKind::MessageTooLarge,
            C::QueueFull => ErrorKind::QueueFull,
            C::Fatal => ErrorKind::Fatal,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(
            ErrorKind::of_code(RDKafkaErrorCode::AllBrokersDown),
            ErrorKind::Unreachable
        );
        assert_eq!(
            ErrorKind::of_code(RDKafkaErrorCode::UnknownTopicOrPartition),
            ErrorKind::MissingTopic
        );
        assert_eq!(
            ErrorKind::of_code(RDKafkaErrorCode::TopicAuthorizationFailed),
            ErrorKind::Authorization
        );
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }
}
