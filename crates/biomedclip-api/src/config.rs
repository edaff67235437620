//! The service's TOML configuration, checked before anything listens.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Plain HTTP only on a loopback address; anything else needs [tls].
    pub listen: SocketAddr,
    /// libpq-style connection string of the authenticator role (no password in the file: use
    /// a Unix socket with peer authentication, or PGPASSFILE).
    pub database: String,
    /// Connections in the pool (requests beyond it wait `pool_timeout_ms`, then get 503).
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    #[serde(default = "defaults::pool_timeout_ms")]
    pub pool_timeout_ms: u64,
    /// statement_timeout of every request's transaction.
    #[serde(default = "defaults::statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Largest request body (images and DICOM files are sent whole).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    pub jwt: JwtConfig,
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256: a file holding the shared secret (at least 32 bytes).
    pub hs256_secret_file: Option<PathBuf>,
    /// RS256: a PEM file holding the issuer's public key.
    pub rs256_public_key_file: Option<PathBuf>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    #[serde(default = "defaults::leeway")]
    pub leeway_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

mod defaults {
    pub fn pool_size() -> usize {
        8
    }
    pub fn pool_timeout_ms() -> u64 {
        2000
    }
    pub fn statement_timeout_ms() -> u64 {
        30_000
    }
    pub fn max_body_bytes() -> usize {
        32 << 20
    }
    pub fn leeway() -> u64 {
        30
    }
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.tls.is_none() && !self.listen.ip().is_loopback() {
            return Err(format!("listen = {}: plain HTTP is allowed on a loopback address only; configure [tls] to listen on {}", self.listen, self.listen.ip()));
        }
        match (&self.jwt.hs256_secret_file, &self.jwt.rs256_public_key_file) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err("[jwt] needs exactly one of hs256_secret_file and rs256_public_key_file".into()),
        }
        if self.pool_size == 0 || self.pool_size > 1000 {
            return Err("pool_size must be 1 to 1000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(), String> {
        toml::from_str::<Config>(s).map_err(|e| e.to_string())?.check()
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let jwt = "[jwt]\nhs256_secret_file = \"/k\"\n";
        assert!(parse(&format!("listen = \"127.0.0.1:8080\"\ndatabase = \"host=/tmp\"\n{jwt}")).is_ok());
        assert!(parse(&format!("listen = \"[::1]:8080\"\ndatabase = \"host=/tmp\"\n{jwt}")).is_ok());
        let err = parse(&format!("listen = \"0.0.0.0:8080\"\ndatabase = \"host=/tmp\"\n{jwt}")).unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        let tls = "[tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\n";
        assert!(parse(&format!("listen = \"0.0.0.0:8080\"\ndatabase = \"host=/tmp\"\n{jwt}{tls}")).is_ok());
    }

    #[test]
    fn exactly_one_key_kind() {
        let base = "listen = \"127.0.0.1:8080\"\ndatabase = \"host=/tmp\"\n";
        assert!(parse(&format!("{base}[jwt]\n")).is_err());
        assert!(parse(&format!("{base}[jwt]\nhs256_secret_file = \"/a\"\nrs256_public_key_file = \"/b\"\n")).is_err());
        assert!(parse(&format!("{base}[jwt]\nhs256_secret_file = \"/a\"\nsurprise = 1\n")).is_err());
    }
}
