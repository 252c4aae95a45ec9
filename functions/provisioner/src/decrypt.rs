//! The HR file arrives encrypted with age (X25519): the provisioner holds the identity (from Secrets
//! Manager), the HR system the recipient. A file that is not age, is for another key, or is cut short
//! is refused whole; the plaintext exists only in memory.

use std::io::Read;
use std::str::FromStr;

/// Files larger than this are refused before decryption ends (the CSV's own limit is 16 MiB).
pub const MAX_PLAINTEXT_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    #[error("the file is not age-encrypted (plaintext is refused: encrypt it to the provisioning recipient with age)")]
    NotEncrypted,
    #[error("the file is not encrypted to this deployment's provisioning key")]
    WrongKey,
    #[error("the file is damaged or truncated: {0}")]
    Corrupt(String),
    #[error("the decrypted file is larger than {MAX_PLAINTEXT_BYTES} bytes")]
    TooLarge,
    #[error("the provisioning identity is not an age X25519 secret key")]
    BadIdentity,
}

/// An age X25519 identity (`AGE-SECRET-KEY-1...`), parsed once at init.
pub struct ProvisioningKey(age::x25519::Identity);

impl ProvisioningKey {
    pub fn parse(secret: &str) -> Result<Self, DecryptError> {
        // An identity file may carry comment lines (`# created: ...`, `# public key: age1...`).
        let key = secret
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or(DecryptError::BadIdentity)?;
        age::x25519::Identity::from_str(key)
            .map(ProvisioningKey)
            .map_err(|_| DecryptError::BadIdentity)
    }

    /// A new identity, as `age-keygen` makes one: the key and its secret text (for Secrets Manager).
    pub fn generate() -> (Self, String) {
        use age::secrecy::ExposeSecret;
        let identity = age::x25519::Identity::generate();
        let secret = identity.to_string().expose_secret().to_string();
        (ProvisioningKey(identity), secret)
    }

    /// The recipient HR encrypts to (`age1...`): safe to publish.
    pub fn recipient(&self) -> String {
        self.0.to_public().to_string()
    }

    pub fn decrypt(&self, file: &[u8]) -> Result<Vec<u8>, DecryptError> {
        // Both the binary and the armored (PEM-like) forms start with a recognisable line.
        let armored = file.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----");
        if !file.starts_with(b"age-encryption.org/") && !armored {
            return Err(DecryptError::NotEncrypted);
        }
        let reader = age::armor::ArmoredReader::new(file);
        let decryptor = age::Decryptor::new(reader).map_err(|e| match e {
            age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => {
                DecryptError::Corrupt(e.to_string())
            }
            other => DecryptError::Corrupt(other.to_string()),
        })?;
        let identity: &dyn age::Identity = &self.0;
        let mut plaintext = Vec::new();
        decryptor
            .decrypt(std::iter::once(identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => DecryptError::WrongKey,
                other => DecryptError::Corrupt(other.to_string()),
            })?
            .take(MAX_PLAINTEXT_BYTES + 1)
            .read_to_end(&mut plaintext)
            .map_err(|e| DecryptError::Corrupt(e.to_string()))?;
        if plaintext.len() as u64 > MAX_PLAINTEXT_BYTES {
            return Err(DecryptError::TooLarge);
        }
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use std::io::Write;

    use super::*;

    fn encrypt(to: &age::x25519::Recipient, plaintext: &[u8]) -> Vec<u8> {
        let recipient: &dyn age::Recipient = to;
        let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient)).unwrap();
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        writer.write_all(plaintext).unwrap();
        writer.finish().unwrap();
        out
    }

    fn key() -> (ProvisioningKey, age::x25519::Recipient) {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let secret = identity.to_string();
        use age::secrecy::ExposeSecret;
        let key = ProvisioningKey::parse(&format!("# created: now\n{}\n", secret.expose_secret()))
            .unwrap();
        (key, recipient)
    }

    #[test]
    fn a_file_for_this_key_decrypts() {
        let (key, recipient) = key();
        assert_eq!(key.recipient(), recipient.to_string());
        let file = encrypt(&recipient, "user_id,name\n001,山田\n".as_bytes());
        assert_eq!(
            key.decrypt(&file).unwrap(),
            "user_id,name\n001,山田\n".as_bytes()
        );
    }

    #[test]
    fn plaintext_other_keys_and_damage_are_refused_whole() {
        let (key, recipient) = key();
        assert_eq!(
            key.decrypt(b"user_id,name\n001,a\n"),
            Err(DecryptError::NotEncrypted)
        );
        let (_, other) = self::key();
        assert_eq!(
            key.decrypt(&encrypt(&other, b"x")),
            Err(DecryptError::WrongKey)
        );
        let file = encrypt(&recipient, &vec![b'a'; 200_000]);
        let truncated = &file[..file.len() - 100];
        assert!(matches!(
            key.decrypt(truncated),
            Err(DecryptError::Corrupt(_))
        ));
        let mut flipped = file.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            key.decrypt(&flipped),
            Err(DecryptError::Corrupt(_))
        ));
        assert!(ProvisioningKey::parse("AGE-SECRET-KEY-1NOTAKEY").is_err());
    }
}
