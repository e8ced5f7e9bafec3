//! The built-in tools: small, deterministic and local. Nothing built in reaches the network; an
//! agent that needs more gets it from an MCP server.
//!
//! | name | arguments | result |
//! |---|---|---|
//! | `time` | `{}` | `{"utc": "2026-12-01T09:30:00Z"}` (RFC 3339, seconds) |
//! | `calculator` | `{"expression": "2 * (3 + 4)"}` | `{"expression": "2 * (3 + 4)", "result": 14}` (see [`super::calculator`]) |

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::calculator;

/// One built-in tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Time,
    Calculator,
}

impl Builtin {
    pub const ALL: [Builtin; 2] = [Builtin::Time, Builtin::Calculator];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Time => "time",
            Self::Calculator => "calculator",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Time => "The current date and time in UTC (RFC 3339).",
            Self::Calculator => {
                "Evaluates an arithmetic expression: numbers, + - * / % ^ (power), unary minus \
                 and parentheses."
            }
        }
    }

    /// The JSON schema of the arguments.
    pub fn parameters(self) -> Value {
        match self {
            Self::Time => {
                json!({"type": "object", "properties": {}, "additionalProperties": false})
            }
            Self::Calculator => json!({
                "type": "object",
                "properties": {
                    "expression": {
                        "type": "string",
                        "description": "The expression, e.g. \"2 * (3 + 4) ^ 2\"."
                    }
                },
                "required": ["expression"],
                "additionalProperties": false
            }),
        }
    }

    /// Runs the tool with already-parsed arguments; the error is for the model to read.
    pub fn call(self, arguments: Map<String, Value>) -> Result<Value, String> {
        match self {
            Self::Time => Ok(json!({ "utc": now_utc() })),
            Self::Calculator => {
                let CalculatorArguments { expression } =
                    serde_json::from_value(Value::Object(arguments))
                        .map_err(|error| format!("bad arguments for calculator: {error}"))?;
                let result = calculator::evaluate(&expression)
                    .map_err(|error| format!("cannot evaluate {expression:?}: {error}"))?;
                Ok(json!({ "expression": expression, "result": number(result) }))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalculatorArguments {
    expression: String,
}

fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Whole numbers as JSON integers (`14`, not `14.0`) while they are exact.
fn number(value: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() <= EXACT {
        // In range and whole: the conversion is exact.
        return json!(value as i64);
    }
    json!(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn the_calculator_answers_with_the_expression_and_its_value() {
        let result = Builtin::Calculator
            .call(arguments(json!({"expression": "2 * (3 + 4)"})))
            .expect("evaluates");
        assert_eq!(result, json!({"expression": "2 * (3 + 4)", "result": 14}));
        let result = Builtin::Calculator
            .call(arguments(json!({"expression": "1 / 4"})))
            .expect("evaluates");
        assert_eq!(result["result"], json!(0.25));
    }

    #[test]
    fn calculator_errors_are_messages_for_the_model() {
        let error = Builtin::Calculator
            .call(arguments(json!({"expression": "1 / 0"})))
            .expect_err("division by zero");
        assert!(error.contains("division by zero"), "{error}");
        for bad in [
            json!({}),
            json!({"expression": 2}),
            json!({"expression": "1", "x": 1}),
        ] {
            let error = Builtin::Calculator
                .call(arguments(bad.clone()))
                .expect_err("bad arguments");
            assert!(error.contains("bad arguments"), "{bad}: {error}");
        }
    }

    #[test]
    fn time_is_utc_in_rfc_3339() {
        let result = Builtin::Time.call(Map::new()).expect("time");
        let utc = result["utc"].as_str().expect("a string");
        assert!(chrono::DateTime::parse_from_rfc3339(utc).is_ok(), "{utc}");
        assert!(utc.ends_with('Z'), "{utc}");
    }

    #[test]
    fn tools_are_found_by_name_only() {
        assert_eq!(Builtin::from_name("time"), Some(Builtin::Time));
        assert_eq!(Builtin::from_name("calculator"), Some(Builtin::Calculator));
        assert_eq!(Builtin::from_name("Calculator"), None);
        assert_eq!(Builtin::from_name("web_search"), None);
    }
}
