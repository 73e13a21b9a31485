//! The emulator's starting data: companies with their organizations and
//! operators, built in ([`Seed::demo`]) or read from a TOML or JSON file.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Seed data: companies with organizations and operators.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Every company the emulator knows; each logs in on its own.
    pub companies: Vec<SeedCompany>,
}

/// One company account: E1 credentials, an optional dashboard key, its organizations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedCompany {
    /// Login for `POST /api/company/get-token`.
    pub login: String,
    /// Password for `POST /api/company/get-token` (a fixture of a fake service, not a secret).
    pub password: String,
    /// Static key accepted in `X-Authorization-Key`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// The company's organizations.
    #[serde(default)]
    pub organizations: Vec<SeedOrganization>,
}

/// One organization and its operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOrganization {
    /// Organization id, unique across the seed.
    pub id: i64,
    /// Display name, e.g. `Customer Support`.
    pub name: String,
    /// Operators of this organization.
    #[serde(default)]
    pub operators: Vec<SeedOperator>,
}

/// One operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOperator {
    /// Operator id, unique across the seed.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// 0 Active, 1 Inactive, 2 Deleted.
    #[serde(default)]
    pub status: i64,
}

/// Why a seed could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The file could not be read.
    #[error("cannot read seed file {path}: {source}")]
    Read {
        /// The file named on the command line.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for a seed.
    #[error("seed is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// The file is not valid JSON for a seed.
    #[error("seed is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The data parsed but contradicts itself (duplicate ids or logins).
    #[error("invalid seed: {0}")]
    Invalid(String),
}

impl Seed {
    /// One company `demo`/`demo-password` (API key `demo-key`) with two organizations:
    /// 6 "Customer Support" (21 Jane, 22 Omar active; 23 Ines inactive) and
    /// 7 "Sales" (31 Alex, 32 Emma active).
    pub fn demo() -> Self {
        let op = |id: i64, name: &str, status: i64| SeedOperator {
            id,
            name: name.into(),
            status,
        };
        Seed {
            companies: vec![SeedCompany {
                login: "demo".into(),
                password: "demo-password".into(),
                api_key: Some("demo-key".into()),
                organizations: vec![
                    SeedOrganization {
                        id: 6,
                        name: "Customer Support".into(),
                        operators: vec![op(21, "Jane", 0), op(22, "Omar", 0), op(23, "Ines", 1)],
                    },
                    SeedOrganization {
                        id: 7,
                        name: "Sales".into(),
                        operators: vec![op(31, "Alex", 0), op(32, "Emma", 0)],
                    },
                ],
            }],
        }
    }

    /// Read a seed file: `.json` as JSON, anything else as TOML.
    pub fn from_file(path: &Path) -> Result<Seed, SeedError> {
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            Seed::from_json_str(&text)
        } else {
            Seed::from_toml_str(&text)
        }
    }

    /// Parse and check a TOML seed.
    pub fn from_toml_str(text: &str) -> Result<Seed, SeedError> {
        let seed: Seed = toml::from_str(text)?;
        seed.check()?;
        Ok(seed)
    }

    /// Parse and check a JSON seed.
    pub fn from_json_str(text: &str) -> Result<Seed, SeedError> {
        let seed: Seed = serde_json::from_str(text)?;
        seed.check()?;
        Ok(seed)
    }

    /// Refuse seeds the emulator could not answer consistently: duplicate logins,
    /// API keys, organization ids or operator ids.
    pub fn check(&self) -> Result<(), SeedError> {
        let mut logins = HashSet::new();
        let mut keys = HashSet::new();
        let mut orgs = HashSet::new();
        let mut ops = HashSet::new();
        for c in &self.companies {
            if c.login.is_empty() || !logins.insert(c.login.as_str()) {
                return Err(SeedError::Invalid(format!(
                    "company login `{}` is empty or used twice",
                    c.login
                )));
            }
            if let Some(k) = &c.api_key
                && (k.is_empty() || !keys.insert(k.as_str()))
            {
                return Err(SeedError::Invalid(format!(
                    "company `{}` has an empty or shared api_key",
                    c.login
                )));
            }
            for o in &c.organizations {
                if !orgs.insert(o.id) {
                    return Err(SeedError::Invalid(format!(
                        "organization id {} is used twice",
                        o.id
                    )));
                }
                for op in &o.operators {
                    if !ops.insert(op.id) {
                        return Err(SeedError::Invalid(format!(
                            "operator id {} is used twice",
                            op.id
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_seed_is_consistent() {
        let seed = Seed::demo();
        seed.check().unwrap();
        let orgs = &seed.companies[0].organizations;
        assert_eq!(orgs.iter().map(|o| o.id).collect::<Vec<_>>(), vec![6, 7]);
        assert_eq!(
            orgs[0].operators[2],
            SeedOperator {
                id: 23,
                name: "Ines".into(),
                status: 1
            }
        );
    }

    #[test]
    fn duplicate_operator_ids_are_refused() {
        let text = r#"
            [[companies]]
            login = "a"
            password = "p"
            [[companies.organizations]]
            id = 1
            name = "One"
            operators = [{ id = 5, name = "X" }, { id = 5, name = "Y" }]
        "#;
        assert!(
            matches!(Seed::from_toml_str(text), Err(SeedError::Invalid(m)) if m.contains("operator id 5"))
        );
    }

    #[test]
    fn json_and_toml_round_trip() {
        let json = serde_json::to_string(&Seed::demo()).unwrap();
        assert_eq!(Seed::from_json_str(&json).unwrap(), Seed::demo());
        let toml_text = toml::to_string(&Seed::demo()).unwrap();
        assert_eq!(Seed::from_toml_str(&toml_text).unwrap(), Seed::demo());
    }
}
