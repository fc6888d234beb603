//! An object version's entity tag, in the one form sealbox keeps it.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// An entity tag: changes whenever the object is replaced. Kept without surrounding quotes or
/// spaces whatever answered it (S3's headers quote it, its event notifications do not, the file
/// store makes its own), so an event's ETag compares equal to a head's. Made only through
/// [`ETag::new`] (or `From`), which normalizes, including when read from JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct ETag(String);

impl ETag {
    /// `raw` in the one form: `"abc"` and `abc` are both `abc`.
    pub fn new(raw: impl AsRef<str>) -> ETag {
        ETag(raw.as_ref().trim().trim_matches('"').to_owned())
    }

    /// The tag, unquoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag as HTTP's `If-Match` and `If-None-Match` headers want it: quoted.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl From<String> for ETag {
    fn from(raw: String) -> ETag {
        ETag::new(raw)
    }
}

impl From<&str> for ETag {
    fn from(raw: &str) -> ETag {
        ETag::new(raw)
    }
}

impl From<ETag> for String {
    fn from(etag: ETag) -> String {
        etag.0
    }
}

impl Deref for ETag {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ETag {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for ETag {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ETag {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_unquoted_tags_are_one_tag() {
        assert_eq!(ETag::new("\"abc\""), ETag::new("abc"));
        assert_eq!(ETag::new(" \"abc-2\" ").as_str(), "abc-2");
        assert_eq!(ETag::new("\"\"").as_str(), "");
        assert_eq!(ETag::new("abc").quoted(), "\"abc\"");
    }

    #[test]
    fn json_holds_the_one_form_and_reading_it_normalizes() {
        let tag: ETag = serde_json::from_str(r#""\"abc\"""#).unwrap();
        assert_eq!(tag, "abc");
        assert_eq!(serde_json::to_string(&tag).unwrap(), r#""abc""#);
    }
}
