//! The Historical API's JSON endpoints: requests and typed results.

use std::collections::BTreeMap;

use dbn::SType;
use serde::Deserialize;

use super::params::{GetRangeParams, symbols_field, validate_dataset, validate_symbols};
use crate::Error;
use crate::live::Symbols;

/// A JSON endpoint request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonRequest {
    /// `metadata.list_datasets`: dataset codes, optionally limited to a date range.
    ListDatasets {
        /// Inclusive start date (`YYYY-MM-DD`).
        start_date: Option<String>,
        /// Exclusive end date (`YYYY-MM-DD`).
        end_date: Option<String>,
    },
    /// `metadata.get_dataset_range`: the available range of a dataset.
    GetDatasetRange {
        /// The dataset code.
        dataset: String,
    },
    /// `metadata.get_record_count`: how many records a `get_range` would return.
    GetRecordCount(GetRangeParams),
    /// `metadata.get_cost`: what a `get_range` would cost, in US dollars.
    GetCost(GetRangeParams),
    /// `symbology.resolve`: symbols of one type to another over a date range.
    SymbologyResolve(ResolveParams),
}

/// Parameters of `symbology.resolve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveParams {
    /// The dataset code.
    pub dataset: String,
    /// The symbols to resolve.
    pub symbols: Symbols,
    /// Their symbology type.
    pub stype_in: SType,
    /// The symbology type to resolve to.
    pub stype_out: SType,
    /// Inclusive start date (`YYYY-MM-DD`).
    pub start_date: String,
    /// Exclusive end date (`YYYY-MM-DD`), optional.
    pub end_date: Option<String>,
}

/// The typed result of a [`JsonRequest`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum JsonResponse {
    /// Dataset codes.
    Datasets(Vec<String>),
    /// A dataset's available range.
    DatasetRange(DatasetRange),
    /// A record count.
    RecordCount(u64),
    /// A cost in US dollars.
    Cost(f64),
    /// A symbology resolution.
    Resolution(Resolution),
}

/// The available range of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DatasetRange {
    /// Start of the available data (ISO-8601).
    pub start: String,
    /// End of the available data (ISO-8601).
    pub end: String,
}

/// One mapping interval of a resolution.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MappingInterval {
    /// Inclusive start date.
    pub d0: String,
    /// Exclusive end date.
    pub d1: String,
    /// The resolved symbol.
    pub s: String,
}

/// The result of `symbology.resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Resolution {
    /// Each input symbol's intervals.
    #[serde(default)]
    pub result: BTreeMap<String, Vec<MappingInterval>>,
    /// Symbols resolved for part of the range only.
    #[serde(default)]
    pub partial: Vec<String>,
    /// Symbols not found.
    #[serde(default)]
    pub not_found: Vec<String>,
    /// The server's message.
    #[serde(default)]
    pub message: String,
}

/// Method, path with query, and form body of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) post: bool,
    pub(crate) target: String,
    pub(crate) form: Option<String>,
}

impl JsonRequest {
    /// Checks what can be checked before sending.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self {
            Self::ListDatasets { .. } => Ok(()),
            Self::GetDatasetRange { dataset } => validate_dataset(dataset),
            Self::GetRecordCount(p) | Self::GetCost(p) => p.validate(),
            Self::SymbologyResolve(p) => {
                validate_dataset(&p.dataset)?;
                validate_symbols(&p.symbols)
            }
        }
    }

    /// The HTTP call for this request.
    pub(crate) fn call(&self) -> Call {
        let mut query = form_urlencoded::Serializer::new(String::new());
        match self {
            Self::ListDatasets {
                start_date,
                end_date,
            } => {
                if let Some(d) = start_date {
                    query.append_pair("start_date", d);
                }
                if let Some(d) = end_date {
                    query.append_pair("end_date", d);
                }
                get("metadata.list_datasets", query.finish())
            }
            Self::GetDatasetRange { dataset } => {
                query.append_pair("dataset", dataset);
                get("metadata.get_dataset_range", query.finish())
            }
            Self::GetRecordCount(p) => post("metadata.get_record_count", count_form(p, None)),
            Self::GetCost(p) => post(
                "metadata.get_cost",
                count_form(p, Some("historical-streaming")),
            ),
            Self::SymbologyResolve(p) => {
                query
                    .append_pair("dataset", &p.dataset)
                    .append_pair("symbols", &symbols_field(&p.symbols))
                    .append_pair("stype_in", p.stype_in.as_str())
                    .append_pair("stype_out", p.stype_out.as_str())
                    .append_pair("start_date", &p.start_date);
                if let Some(d) = &p.end_date {
                    query.append_pair("end_date", d);
                }
                post("symbology.resolve", query.finish())
            }
        }
    }

    /// Parses the JSON body of a 2xx response.
    pub(crate) fn parse(&self, body: &[u8]) -> Result<JsonResponse, String> {
        let err = |e: serde_json::Error| format!("unexpected JSON from the server: {e}");
        Ok(match self {
            Self::ListDatasets { .. } => {
                JsonResponse::Datasets(serde_json::from_slice(body).map_err(err)?)
            }
            Self::GetDatasetRange { .. } => {
                JsonResponse::DatasetRange(serde_json::from_slice(body).map_err(err)?)
            }
            Self::GetRecordCount(_) => {
                JsonResponse::RecordCount(serde_json::from_slice(body).map_err(err)?)
            }
            Self::GetCost(_) => JsonResponse::Cost(serde_json::from_slice(body).map_err(err)?),
            Self::SymbologyResolve(_) => {
                JsonResponse::Resolution(serde_json::from_slice(body).map_err(err)?)
            }
        })
    }
}

fn get(endpoint: &str, query: String) -> Call {
    let target = if query.is_empty() {
        format!("/v0/{endpoint}")
    } else {
        format!("/v0/{endpoint}?{query}")
    };
    Call {
        post: false,
        target,
        form: None,
    }
}

fn post(endpoint: &str, form: String) -> Call {
    Call {
        post: true,
        target: format!("/v0/{endpoint}"),
        form: Some(form),
    }
}

/// The form of `get_record_count` / `get_cost`: the range fields without encoding.
fn count_form(p: &GetRangeParams, mode: Option<&str>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("dataset", &p.dataset)
        .append_pair("symbols", &symbols_field(&p.symbols))
        .append_pair("schema", p.schema.as_str())
        .append_pair("start", &super::params::wire(&p.start));
    if let Some(end) = &p.end {
        form.append_pair("end", &super::params::wire(end));
    }
    form.append_pair("stype_in", p.stype_in.as_str());
    if let Some(limit) = p.limit {
        form.append_pair("limit", &limit.to_string());
    }
    if let Some(mode) = mode {
        form.append_pair("mode", mode);
    }
    form.finish()
}

#[cfg(test)]
mod tests {
    use dbn::Schema;

    use super::*;

    #[test]
    fn calls_have_the_documented_paths_and_fields() {
        let list = JsonRequest::ListDatasets {
            start_date: Some("2024-01-01".into()),
            end_date: None,
        };
        assert_eq!(
            list.call(),
            Call {
                post: false,
                target: "/v0/metadata.list_datasets?start_date=2024-01-01".into(),
                form: None
            }
        );
        let range = JsonRequest::GetDatasetRange {
            dataset: "GLBX.MDP3".into(),
        };
        assert_eq!(
            range.call().target,
            "/v0/metadata.get_dataset_range?dataset=GLBX.MDP3"
        );
        let p = GetRangeParams::new("GLBX.MDP3", Schema::Trades, ["ES"], 5u64).limit(3);
        let count = JsonRequest::GetRecordCount(p.clone()).call();
        assert!(count.post);
        assert_eq!(count.target, "/v0/metadata.get_record_count");
        assert_eq!(
            count.form.as_deref(),
            Some("dataset=GLBX.MDP3&symbols=ES&schema=trades&start=5&stype_in=raw_symbol&limit=3")
        );
        assert!(
            JsonRequest::GetCost(p)
                .call()
                .form
                .unwrap()
                .ends_with("&mode=historical-streaming")
        );
        let resolve = JsonRequest::SymbologyResolve(ResolveParams {
            dataset: "GLBX.MDP3".into(),
            symbols: ["ESM4", "NQM4"].into(),
            stype_in: SType::RawSymbol,
            stype_out: SType::InstrumentId,
            start_date: "2024-01-01".into(),
            end_date: None,
        })
        .call();
        assert_eq!(resolve.target, "/v0/symbology.resolve");
        assert!(resolve.form.unwrap().contains("symbols=ESM4%2CNQM4"));
    }

    #[test]
    fn responses_parse_into_types() {
        let list = JsonRequest::ListDatasets {
            start_date: None,
            end_date: None,
        };
        assert_eq!(
            list.parse(br#"["GLBX.MDP3","XNAS.ITCH"]"#).unwrap(),
            JsonResponse::Datasets(vec!["GLBX.MDP3".into(), "XNAS.ITCH".into()])
        );
        let p = GetRangeParams::new("X", Schema::Trades, ["ES"], 0u64);
        assert_eq!(
            JsonRequest::GetRecordCount(p.clone())
                .parse(b"1234")
                .unwrap(),
            JsonResponse::RecordCount(1234)
        );
        assert_eq!(
            JsonRequest::GetCost(p).parse(b"0.75").unwrap(),
            JsonResponse::Cost(0.75)
        );
        let resolution = br#"{"result":{"ESM4":[{"d0":"2024-01-01","d1":"2024-01-02","s":"12345"}]},"symbols":["ESM4"],"stype_in":"raw_symbol","stype_out":"instrument_id","start_date":"2024-01-01","end_date":"2024-01-02","partial":[],"not_found":["XX"],"message":"OK","status":0}"#;
        let JsonResponse::Resolution(r) = JsonRequest::SymbologyResolve(ResolveParams {
            dataset: "GLBX.MDP3".into(),
            symbols: "ESM4".into(),
            stype_in: SType::RawSymbol,
            stype_out: SType::InstrumentId,
            start_date: "2024-01-01".into(),
            end_date: None,
        })
        .parse(resolution)
        .unwrap() else {
            panic!("a resolution");
        };
        assert_eq!(r.result["ESM4"][0].s, "12345");
        assert_eq!(r.not_found, ["XX"]);
        assert!(list.parse(b"{not json").is_err());
    }
}
