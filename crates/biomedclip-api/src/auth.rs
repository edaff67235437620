//! Bearer JWT authentication as PostgREST does it: the token's `role` claim names the PostgreSQL
//! role a request runs as. Signature (HS256 or RS256, one algorithm, fixed by the configuration),
//! `exp` (required) and, when configured, `aud` are checked before anything touches the database.

use crate::config::JwtConfig;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    role: Option<String>,
}

/// Why a request is refused (always 401; the reason goes to the response, never a token).
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Invalid(String),
    NoRole,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => write!(f, "a bearer token is required (Authorization: Bearer <JWT>)"),
            AuthError::Invalid(why) => write!(f, "invalid token: {why}"),
            AuthError::NoRole => write!(f, "the token has no usable \"role\" claim"),
        }
    }
}

impl Verifier {
    pub fn from_config(c: &JwtConfig) -> Result<Verifier, String> {
        let (key, alg) = if let Some(path) = &c.hs256_secret_file {
            let secret = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let secret = trim_newline(&secret);
            if secret.len() < 32 {
                return Err(format!("{}: an HS256 secret needs at least 32 bytes", path.display()));
            }
            (DecodingKey::from_secret(secret), Algorithm::HS256)
        } else {
            let path = c.rs256_public_key_file.as_ref().expect("checked by Config::check");
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            (DecodingKey::from_rsa_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?, Algorithm::RS256)
        };
        let mut validation = Validation::new(alg);
        validation.leeway = c.leeway_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &c.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Verifier { key, validation })
    }

    /// The role a request with this `Authorization` header runs as.
    pub fn role(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).ok_or(AuthError::Missing)?.trim();
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let role = data.claims.role.ok_or(AuthError::NoRole)?;
        if role.is_empty() || role.len() > 63 || role.contains('\0') {
            return Err(AuthError::NoRole);
        }
        Ok(role)
    }
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && (b[end - 1] == b'\n' || b[end - 1] == b'\r') {
        end -= 1;
    }
    &b[..end]
}

/// A role name as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier() -> Verifier {
        let dir = std::env::temp_dir().join(format!("biomedclip-api-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, [SECRET, b"\n"].concat()).unwrap();
        Verifier::from_config(&JwtConfig { hs256_secret_file: Some(path), rs256_public_key_file: None, audience: None, leeway_s: 0 }).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn token(claims: serde_json::Value, key: &[u8], alg: Algorithm) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key)).unwrap()
    }

    #[test]
    fn accepts_a_valid_token_and_refuses_the_rest() {
        let v = verifier();
        let good = token(json!({"role": "ward_a", "exp": now() + 60}), SECRET, Algorithm::HS256);
        assert_eq!(v.role(Some(&format!("Bearer {good}"))), Ok("ward_a".into()));
        assert_eq!(v.role(None), Err(AuthError::Missing));
        assert_eq!(v.role(Some(&format!("Basic {good}"))), Err(AuthError::Missing));
        let forged = token(json!({"role": "ward_a", "exp": now() + 60}), b"another secret of 32 bytes......", Algorithm::HS256);
        assert!(matches!(v.role(Some(&format!("Bearer {forged}"))), Err(AuthError::Invalid(_))));
        let expired = token(json!({"role": "ward_a", "exp": now() - 10}), SECRET, Algorithm::HS256);
        assert!(matches!(v.role(Some(&format!("Bearer {expired}"))), Err(AuthError::Invalid(_))));
        let no_exp = token(json!({"role": "ward_a"}), SECRET, Algorithm::HS256);
        assert!(matches!(v.role(Some(&format!("Bearer {no_exp}"))), Err(AuthError::Invalid(_))));
        let other_alg = token(json!({"role": "ward_a", "exp": now() + 60}), SECRET, Algorithm::HS512);
        assert!(matches!(v.role(Some(&format!("Bearer {other_alg}"))), Err(AuthError::Invalid(_))));
        let no_role = token(json!({"exp": now() + 60}), SECRET, Algorithm::HS256);
        assert_eq!(v.role(Some(&format!("Bearer {no_role}"))), Err(AuthError::NoRole));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
