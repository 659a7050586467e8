//! Range checks on the sampling fields, and resolving a model name against the catalog.
//!
//! Checked here, before a job is signed, so a bad value costs the caller a 400 naming the
//! field instead of a fee for a job that cannot run.

use crate::api::request::Common;
use crate::error::ApiError;
use crate::network::{CatalogModel, ModelKind};

/// OpenAI's limit on stop strings.
pub const MAX_STOP_STRINGS: usize = 4;

/// Sampling settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// At least 1.
    pub max_tokens: u32,
    /// In 0..=2.
    pub temperature: f32,
    /// In (0, 1].
    pub top_p: f32,
    /// The sampler's seed.
    pub seed: Option<u64>,
    /// At most [`MAX_STOP_STRINGS`], none empty.
    pub stop: Vec<String>,
}

/// Checks the shared fields; `default_max_tokens` applies when the caller set no limit.
pub fn sampling(common: &Common, default_max_tokens: u32) -> Result<Sampling, ApiError> {
    if let Some(n) = common.n
        && n != 1
    {
        return Err(ApiError::invalid(
            "n",
            format!("`n` must be 1 (one choice per request is served), not {n}"),
        ));
    }
    let max_tokens = match common.max_tokens {
        None => default_max_tokens.max(1),
        Some(max) if max >= 1 => u32::try_from(max).unwrap_or(u32::MAX),
        Some(max) => {
            let param = common.max_tokens_param;
            return Err(ApiError::invalid(
                param,
                format!("`{param}` must be at least 1, not {max}"),
            ));
        }
    };
    let temperature = common.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("`temperature` must be between 0 and 2, not {temperature}"),
        ));
    }
    let top_p = common.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("`top_p` must be greater than 0 and at most 1, not {top_p}"),
        ));
    }
    if common.stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "`stop` may hold at most {MAX_STOP_STRINGS} strings, not {}",
                common.stop.len()
            ),
        ));
    }
    // An empty stop string would end every answer before it starts: OpenAI ignores them.
    let stop = common
        .stop
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    Ok(Sampling {
        max_tokens,
        temperature: temperature as f32,
        top_p: top_p as f32,
        seed: common.seed,
        stop,
    })
}

/// A requested model found in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// The base model.
    pub base: &'a CatalogModel,
    /// The adapter, for `BASE:ADAPTER`.
    pub adapter: Option<&'a CatalogModel>,
}

impl Resolved<'_> {
    /// The chat template to render with: the adapter's own, else its base's (an adapter
    /// fine-tuned on a chat format ships the template it was trained with).
    pub fn chat_template(&self) -> Option<&str> {
        self.adapter
            .and_then(|adapter| adapter.chat_template.as_deref())
            .or(self.base.chat_template.as_deref())
    }

    /// The special tokens the template sees, the adapter's overriding its base's.
    pub fn bos_token(&self) -> Option<&str> {
        self.adapter
            .and_then(|adapter| adapter.bos_token.as_deref())
            .or(self.base.bos_token.as_deref())
    }

    /// As [`Self::bos_token`].
    pub fn eos_token(&self) -> Option<&str> {
        self.adapter
            .and_then(|adapter| adapter.eos_token.as_deref())
            .or(self.base.eos_token.as_deref())
    }
}

/// Finds `name` (a base model, or `BASE:ADAPTER`) in the catalog; a 404 if it is not there,
/// or if the adapter is not one for that base.
pub fn resolve<'a>(catalog: &'a [CatalogModel], name: &str) -> Result<Resolved<'a>, ApiError> {
    let find = |wanted: &str, base: bool| {
        catalog
            .iter()
            .find(|model| model.name == wanted && matches!(model.kind, ModelKind::Base) == base)
    };
    match name.split_once(':') {
        None => find(name, true)
            .map(|base| Resolved {
                base,
                adapter: None,
            })
            .ok_or_else(|| ApiError::unknown_model(name)),
        Some((base_name, adapter_name)) => {
            let base = find(base_name, true).ok_or_else(|| ApiError::unknown_model(name))?;
            let adapter = find(adapter_name, false)
                .filter(|adapter| {
                    matches!(&adapter.kind, ModelKind::Adapter { base } if base == base_name)
                })
                .ok_or_else(|| ApiError::unknown_model(name))?;
            Ok(Resolved {
                base,
                adapter: Some(adapter),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common() -> Common {
        Common {
            model: "m".into(),
            max_tokens_param: "max_tokens",
            ..Common::default()
        }
    }

    fn param_of(common: Common) -> Option<String> {
        sampling(&common, 16).unwrap_err().param
    }

    #[test]
    fn defaults_apply_when_unset() {
        let s = sampling(&common(), 16).unwrap();
        assert_eq!((s.max_tokens, s.temperature, s.top_p), (16, 1.0, 1.0));
    }

    #[test]
    fn ranges_are_checked_and_name_the_field() {
        let p = |f: fn(&mut Common)| {
            let mut c = common();
            f(&mut c);
            param_of(c)
        };
        assert_eq!(p(|c| c.n = Some(2)).as_deref(), Some("n"));
        assert_eq!(p(|c| c.max_tokens = Some(0)).as_deref(), Some("max_tokens"));
        assert_eq!(
            p(|c| c.temperature = Some(-1.0)).as_deref(),
            Some("temperature")
        );
        assert_eq!(
            p(|c| c.temperature = Some(2.5)).as_deref(),
            Some("temperature")
        );
        assert_eq!(p(|c| c.top_p = Some(0.0)).as_deref(), Some("top_p"));
        assert_eq!(p(|c| c.top_p = Some(1.5)).as_deref(), Some("top_p"));
        assert_eq!(p(|c| c.stop = vec!["a".into(); 5]).as_deref(), Some("stop"));
        let mut c = common();
        (c.temperature, c.top_p, c.n) = (Some(0.0), Some(1.0), Some(1));
        assert!(sampling(&c, 16).is_ok());
    }

    #[test]
    fn adapters_resolve_only_over_their_base() {
        let model = |name: &str, kind| CatalogModel {
            name: name.into(),
            kind,
            created: 0,
            owner: String::new(),
            chat_template: None,
            bos_token: None,
            eos_token: None,
            context_length: 8,
        };
        let catalog = [
            model("a", ModelKind::Base),
            model("b", ModelKind::Base),
            model("x", ModelKind::Adapter { base: "a".into() }),
        ];
        assert_eq!(resolve(&catalog, "a:x").unwrap().adapter.unwrap().name, "x");
        assert!(resolve(&catalog, "b:x").is_err());
        assert!(resolve(&catalog, "x").is_err());
        assert!(resolve(&catalog, "c").is_err());
    }
}
