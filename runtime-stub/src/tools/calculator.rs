//! The `calculator` built-in: evaluates an arithmetic expression. Numbers (`2`, `0.5`, `1e3`),
//! `+ - * / % ^` (`^` is a power and binds tighter than a leading minus: `-2^2` is -4; `%` is the
//! remainder with the sign of the dividend), unary minus and parentheses. Nothing else: no
//! names, no functions, so a model cannot make it do anything but arithmetic.
//!
//! Input is bounded ([`MAX_EXPRESSION_LEN`] bytes, [`MAX_DEPTH`] levels of nesting), and every
//! failure (garbage, division by zero, a result too large to represent) is a clean error for the
//! model to read. It never panics and never recurses without bound.

/// The longest expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 1024;
/// How deeply parentheses, unary minus signs and powers may nest.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalcError {
    #[error("the expression is empty")]
    Empty,
    #[error("the expression is longer than {MAX_EXPRESSION_LEN} bytes")]
    TooLong,
    #[error("the expression nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("unexpected {found} at position {position}")]
    Unexpected { found: String, position: usize },
    #[error("{0:?} is not a number")]
    BadNumber(String),
    #[error("division by zero")]
    DivisionByZero,
    #[error("the result is not a finite number")]
    NotFinite,
}

/// The value of `expression`.
pub fn evaluate(expression: &str) -> Result<f64, CalcError> {
    if expression.len() > MAX_EXPRESSION_LEN {
        return Err(CalcError::TooLong);
    }
    if expression.trim().is_empty() {
        return Err(CalcError::Empty);
    }
    let mut parser = Parser {
        text: expression,
        position: 0,
        depth: 0,
    };
    let value = parser.sum()?;
    parser.skip_whitespace();
    if let Some(found) = parser.peek() {
        return Err(parser.unexpected(found));
    }
    finite(value)
}

/// A recursive-descent parser that evaluates as it goes:
/// `sum := product (("+" | "-") product)*`, `product := unary (("*" | "/" | "%") unary)*`,
/// `unary := "-" unary | "+" unary | power`, `power := atom ("^" unary)?`,
/// `atom := number | "(" sum ")"`.
struct Parser<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    position: usize,
    depth: usize,
}

impl Parser<'_> {
    fn sum(&mut self) -> Result<f64, CalcError> {
        let mut value = self.product()?;
        loop {
            self.skip_whitespace();
            match self.peek() {
                Some('+') => {
                    self.advance();
                    value = finite(value + self.product()?)?;
                }
                Some('-') => {
                    self.advance();
                    value = finite(value - self.product()?)?;
                }
                _ => return Ok(value),
            }
        }
    }

    fn product(&mut self) -> Result<f64, CalcError> {
        let mut value = self.unary()?;
        loop {
            self.skip_whitespace();
            let operator = match self.peek() {
                Some(operator @ ('*' | '/' | '%')) => operator,
                _ => return Ok(value),
            };
            self.advance();
            let right = self.unary()?;
            value = match operator {
                '*' => value * right,
                _ if right == 0.0 => return Err(CalcError::DivisionByZero),
                '/' => value / right,
                _ => value % right,
            };
            value = finite(value)?;
        }
    }

    fn unary(&mut self) -> Result<f64, CalcError> {
        self.descend()?;
        self.skip_whitespace();
        let value = match self.peek() {
            Some('-') => {
                self.advance();
                -self.unary()?
            }
            Some('+') => {
                self.advance();
                self.unary()?
            }
            _ => self.power()?,
        };
        self.depth -= 1;
        Ok(value)
    }

    fn power(&mut self) -> Result<f64, CalcError> {
        let base = self.atom()?;
        self.skip_whitespace();
        if self.peek() != Some('^') {
            return Ok(base);
        }
        self.advance();
        // Right-associative, and the exponent may be negative: 2^-1, 2^3^2 = 2^9.
        let exponent = self.unary()?;
        finite(base.powf(exponent))
    }

    fn atom(&mut self) -> Result<f64, CalcError> {
        self.skip_whitespace();
        match self.peek() {
            Some('(') => {
                self.advance();
                let value = self.sum()?;
                self.skip_whitespace();
                match self.peek() {
                    Some(')') => {
                        self.advance();
                        Ok(value)
                    }
                    Some(found) => Err(self.unexpected(found)),
                    None => Err(self.unexpected_end()),
                }
            }
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(found) => Err(self.unexpected(found)),
            None => Err(self.unexpected_end()),
        }
    }

    fn number(&mut self) -> Result<f64, CalcError> {
        let start = self.position;
        self.take_while(|c| c.is_ascii_digit() || c == '.');
        // An exponent only when digits follow, so `2e` stays an error rather than a name.
        let rest = &self.text[self.position..];
        let mut exponent = rest.chars();
        if matches!(exponent.next(), Some('e' | 'E')) {
            let after_sign = match exponent.clone().next() {
                Some('+' | '-') => 2,
                _ => 1,
            };
            if rest[after_sign..].starts_with(|c: char| c.is_ascii_digit()) {
                self.position += after_sign;
                self.take_while(|c| c.is_ascii_digit());
            }
        }
        let literal = &self.text[start..self.position];
        let value: f64 = literal
            .parse()
            .map_err(|_| CalcError::BadNumber(literal.to_owned()))?;
        finite(value)
    }

    fn descend(&mut self) -> Result<(), CalcError> {
        if self.depth >= MAX_DEPTH {
            return Err(CalcError::TooDeep);
        }
        self.depth += 1;
        Ok(())
    }

    fn peek(&self) -> Option<char> {
        self.text[self.position..].chars().next()
    }

    fn advance(&mut self) {
        if let Some(c) = self.peek() {
            self.position += c.len_utf8();
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) {
        while let Some(c) = self.peek().filter(|&c| keep(c)) {
            self.position += c.len_utf8();
        }
    }

    fn skip_whitespace(&mut self) {
        self.take_while(char::is_whitespace);
    }

    fn unexpected(&self, found: char) -> CalcError {
        CalcError::Unexpected {
            found: format!("{found:?}"),
            position: self.position,
        }
    }

    fn unexpected_end(&self) -> CalcError {
        CalcError::Unexpected {
            found: "end of the expression".to_owned(),
            position: self.position,
        }
    }
}

fn finite(value: f64) -> Result<f64, CalcError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CalcError::NotFinite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(expression: &str) -> f64 {
        evaluate(expression).unwrap_or_else(|error| panic!("{expression:?}: {error}"))
    }

    #[test]
    fn arithmetic_follows_the_usual_precedence() {
        assert_eq!(value("2 + 3 * 4"), 14.0);
        assert_eq!(value("(2 + 3) * 4"), 20.0);
        assert_eq!(value("10 - 4 - 3"), 3.0);
        assert_eq!(value("7 / 2"), 3.5);
        assert_eq!(value("7 % 3"), 1.0);
        assert_eq!(value("-7 % 3"), -1.0);
        assert_eq!(value("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(value("-2 ^ 2"), -4.0);
        assert_eq!(value("2 ^ -1"), 0.5);
        assert_eq!(value("--3"), 3.0);
        assert_eq!(value("+3"), 3.0);
        assert_eq!(value("1.5e3 + .5"), 1500.5);
        assert_eq!(value("2E-2"), 0.02);
        assert_eq!(value("  ( ( 1 ) )  "), 1.0);
    }

    #[test]
    fn division_by_zero_is_a_clean_error() {
        assert_eq!(evaluate("1 / 0"), Err(CalcError::DivisionByZero));
        assert_eq!(evaluate("1 % (2 - 2)"), Err(CalcError::DivisionByZero));
        assert_eq!(evaluate("0 / 0"), Err(CalcError::DivisionByZero));
    }

    #[test]
    fn garbage_is_refused_with_where_it_went_wrong() {
        for expression in [
            "2 +",
            "2 3",
            "(1",
            "1)",
            "abc",
            "2e",
            "1..2",
            "1 + * 2",
            "sqrt(4)",
            "()",
            "1 ** 2",
            "2 ^",
            "0x10",
            "1,000",
            "٣",
            "1 + 2; rm -rf /",
        ] {
            assert!(evaluate(expression).is_err(), "{expression:?} should fail");
        }
        assert_eq!(evaluate(""), Err(CalcError::Empty));
        assert_eq!(evaluate("   "), Err(CalcError::Empty));
        assert_eq!(
            evaluate("1 + x"),
            Err(CalcError::Unexpected {
                found: "'x'".into(),
                position: 4
            })
        );
    }

    #[test]
    fn hostile_input_is_bounded_and_never_panics() {
        let long = "1+".repeat(MAX_EXPRESSION_LEN) + "1";
        assert_eq!(evaluate(&long), Err(CalcError::TooLong));
        let deep = "(".repeat(500) + "1" + &")".repeat(500);
        assert_eq!(evaluate(&deep), Err(CalcError::TooDeep));
        let minuses = "-".repeat(MAX_EXPRESSION_LEN - 1) + "1";
        assert_eq!(evaluate(&minuses), Err(CalcError::TooDeep));
        let powers = "2^".repeat(300) + "2";
        assert!(evaluate(&powers).is_err());
        assert_eq!(evaluate("10 ^ 400"), Err(CalcError::NotFinite));
        assert_eq!(evaluate("1e999"), Err(CalcError::NotFinite));
        assert_eq!(evaluate("(-8) ^ 0.5"), Err(CalcError::NotFinite));
        // Multi-byte characters anywhere must not split a character when reporting a position.
        for expression in ["é", "1 + é", "1é", "(é", "1e\u{301}", "2^é"] {
            assert!(evaluate(expression).is_err(), "{expression:?}");
        }
        // Every prefix of a valid expression either evaluates or fails cleanly.
        let expression = "-(1.5e2 + 3) * 2 ^ -1 % 7 / (2 - 0.5)";
        for end in 0..=expression.len() {
            let _ = evaluate(&expression[..end]);
        }
    }
}
