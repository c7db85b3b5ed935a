//! Where the cluster is and how to talk to it: brokers, TLS, SASL, and the producer
//! settings every flowexporter producer shares.

use std::{path::PathBuf, time::Duration};

use rdkafka::ClientConfig;

use crate::KafkaError;

/// TLS to the brokers (`security.protocol=ssl`, or `sasl_ssl` with [`Sasl`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaTls {
    /// CA certificates (PEM) the brokers' certificates are checked against; `None`:
    /// the system's.
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM), for brokers that require one.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
}

/// A SASL mechanism librdkafka supports without Kerberos.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN` (use it with TLS only: the password crosses the network).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The name Kafka and librdkafka use.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Parses `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (any case).
    pub fn parse(text: &str) -> Result<SaslMechanism, KafkaError> {
        match text.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(KafkaError::InvalidSetting {
                key: "sasl mechanism",
                value: text.to_owned(),
                reason: "is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512".to_owned(),
            }),
        }
    }
}

/// SASL authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password (never printed by `Debug`).
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// How to reach a Kafka cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaSettings {
    /// Bootstrap brokers, `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// The client ID the brokers see (default `flowexporter`).
    pub client_id: String,
    /// TLS, if the brokers require it.
    pub tls: Option<KafkaTls>,
    /// SASL, if the brokers require it.
    pub sasl: Option<Sasl>,
    /// Producer compression: `zstd` (default), `lz4`, `snappy`, `gzip` or `none`.
    pub compression: String,
    /// Longest a request to a broker may take (`request.timeout.ms` and
    /// `socket.timeout.ms`), default 30 s.
    pub request_timeout: Duration,
    /// More librdkafka properties, applied last (`key=value`, as librdkafka names them).
    pub extra: Vec<(String, String)>,
}

impl KafkaSettings {
    /// Settings for `brokers` (`HOST:PORT[,HOST:PORT...]`), checked.
    pub fn new(brokers: &str) -> Result<KafkaSettings, KafkaError> {
        let brokers = brokers.trim();
        let bad = |reason: &str| KafkaError::InvalidSetting {
            key: "kafka brokers",
            value: brokers.to_owned(),
            reason: reason.to_owned(),
        };
        if brokers.is_empty() {
            return Err(bad("is empty"));
        }
        for broker in brokers.split(',') {
            let broker = broker.trim();
            let Some((host, port)) = broker.rsplit_once(':') else {
                return Err(bad(&format!("{broker:?} is not HOST:PORT")));
            };
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad(&format!("{broker:?} is not HOST:PORT")));
            }
        }
        Ok(KafkaSettings {
            brokers: brokers.to_owned(),
            client_id: "flowexporter".to_owned(),
            tls: None,
            sasl: None,
            compression: "zstd".to_owned(),
            request_timeout: Duration::from_secs(30),
            extra: Vec::new(),
        })
    }

    /// Sets the client ID.
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> KafkaSettings {
        self.client_id = client_id.into();
        self
    }

    /// Sets TLS.
    pub fn with_tls(mut self, tls: KafkaTls) -> KafkaSettings {
        self.tls = Some(tls);
        self
    }

    /// Sets SASL.
    pub fn with_sasl(mut self, sasl: Sasl) -> KafkaSettings {
        self.sasl = Some(sasl);
        self
    }

    /// Sets the producer compression (checked).
    pub fn with_compression(mut self, codec: &str) -> Result<KafkaSettings, KafkaError> {
        match codec {
            "zstd" | "lz4" | "snappy" | "gzip" | "none" => {
                self.compression = codec.to_owned();
                Ok(self)
            }
            _ => Err(KafkaError::InvalidSetting {
                key: "kafka compression",
                value: codec.to_owned(),
                reason: "is not zstd, lz4, snappy, gzip or none".to_owned(),
            }),
        }
    }

    /// Adds a librdkafka property (applied after everything else).
    pub fn with_property(mut self, key: &str, value: &str) -> KafkaSettings {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The client configuration: brokers, client ID, timeouts, TLS, SASL and the extra
    /// properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        let timeout_ms = self
            .request_timeout
            .as_millis()
            .clamp(10, 900_000)
            .to_string();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("socket.timeout.ms", &timeout_ms)
            // Reconnects back off from 100 ms up to 10 s (librdkafka's defaults are
            // 100 ms and 10 s too; spelled out because the tests rely on them).
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "10000")
            .set("log.connection.close", "false");
        let protocol = match (&self.tls, &self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                config.set("ssl.ca.location", ca.display().to_string());
            }
            if let Some(cert) = &tls.cert_file {
                config.set("ssl.certificate.location", cert.display().to_string());
            }
            if let Some(key) = &tls.key_file {
                config.set("ssl.key.location", key.display().to_string());
            }
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanisms", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config
    }

    /// The configuration of a producer that neither loses nor duplicates what the
    /// brokers acknowledged: the idempotent producer (`enable.idempotence`: sequence
    /// numbers per partition, so librdkafka's retries neither reorder nor duplicate),
    /// `acks=all`, the chosen compression, a 5 ms linger (batches fill up under load,
    /// a lone message waits 5 ms), and `message_timeout`: how long librdkafka keeps
    /// retrying a message before it reports it failed (`None`: forever, for a caller
    /// that holds its own copy of nothing and must not lose a message).
    pub fn producer_config(&self, message_timeout: Option<Duration>) -> ClientConfig {
        let mut config = self.client_config();
        let timeout_ms = self
            .request_timeout
            .as_millis()
            .clamp(10, 900_000)
            .to_string();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &self.compression)
            .set("linger.ms", "5")
            .set("request.timeout.ms", &timeout_ms)
            .set(
                "message.timeout.ms",
                message_timeout
                    .map_or(0, |t| t.as_millis().clamp(1, u128::from(u32::MAX >> 1)))
                    .to_string(),
            );
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config
    }

    /// The configuration of a consumer: no automatic offset commits (the caller
    /// commits what its output holds), no topics created by asking for them.
    pub fn consumer_config(&self, group: Option<&str>) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("allow.auto.create.topics", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        // A consumer without a group (the heartbeat reader assigns its partitions
        // itself) still needs a group.id for librdkafka's bookkeeping; it never
        // commits.
        config.set("group.id", group.unwrap_or("flowexporter-unused"));
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_checked() {
        assert!(KafkaSettings::new("127.0.0.1:9092").is_ok());
        assert!(KafkaSettings::new("a:1,b:2").is_ok());
        for bad in [
            "",
            "host",
            "host:",
            ":9092",
            "host:0",
            "host:99999",
            "a:1,b",
        ] {
            let error = KafkaSettings::new(bad).expect_err(bad);
            assert!(error.to_string().contains("kafka brokers"), "{error}");
        }
    }

    #[test]
    fn producer_settings_are_the_safe_ones() {
        let settings = KafkaSettings::new("127.0.0.1:9092").expect("valid");
        let config = settings.producer_config(None);
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("compression.type"), Some("zstd"));
        assert_eq!(config.get("message.timeout.ms"), Some("0"));
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
    }

    #[test]
    fn tls_and_sasl_choose_the_protocol() {
        let sasl = Sasl {
            mechanism: SaslMechanism::parse("scram-sha-512").expect("known"),
            username: "u".into(),
            password: "secret".into(),
        };
        let both = KafkaSettings::new("b:1")
            .expect("valid")
            .with_tls(KafkaTls::default())
            .with_sasl(sasl.clone());
        let config = both.client_config();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert!(!format!("{both:?}").contains("secret"));
        let plain = KafkaSettings::new("b:1").expect("valid").with_sasl(sasl);
        assert_eq!(
            plain.client_config().get("security.protocol"),
            Some("sasl_plaintext")
        );
        assert!(SaslMechanism::parse("GSSAPI").is_err());
    }
}
