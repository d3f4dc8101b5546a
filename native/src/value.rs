//! JSON values as the Python path holds them, parsed and printed the way Python's `json` does.
//!
//! Why hand-written: outputs must be byte-for-byte what the Python worker writes, so numbers
//! print as Python's `repr(float)`, objects keep insertion order (a repeated key keeps its
//! first position and takes the last value, like a `dict`), `NaN`/`Infinity` literals parse,
//! and strings escape exactly as `json.dumps` escapes them (with or without `ensure_ascii`).
//! Values the plain reader cannot give the same meaning to (jsonx tagged objects, lone
//! surrogates, extreme nesting) are reported as [`JsonError::Unsupported`] rather than guessed.

pub use crate::map::{Key, KeyMap, Map};

/// The tag jsonx uses for values JSON lacks (`{"$st": tag, "v": value}`).
pub const TAG: &str = "$st";
/// Below the Python engine's `MAX_PAYLOAD_DEPTH` (64): deeper payloads are its to refuse.
const MAX_DEPTH: usize = 60;
const MAX_INT_DIGITS: usize = 4300; // Python's int-from-text limit

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer beyond 64 bits, as its decimal digits (Python ints are unbounded).
    BigInt(String),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(Map),
    /// A naive UTC datetime in microseconds since the epoch (the engine's timestamps).
    Time(i64),
}

#[derive(Debug, PartialEq)]
pub enum JsonError {
    /// Not JSON text (Python raises too: the reason is `invalid_payload`).
    Invalid(String),
    /// JSON Python reads into something this core does not model (the Python engine decides).
    Unsupported(String),
}

impl Value {
    /// Python's truthiness.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::BigInt(_) => true,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Time(_) => true,
        }
    }

    /// `type(value).__name__` in Python.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Map(_) => "dict",
            Value::Time(_) => "datetime",
        }
    }
}

// -- parsing ---------------------------------------------------------------------------

/// Parse JSON text as `jsonx.loads` would.
pub fn parse(text: &str) -> Result<Value, JsonError> {
    if text.contains(TAG) {
        return Err(JsonError::Unsupported("jsonx tagged values".into()));
    }
    let mut parser = Parser {
        bytes: text.as_bytes(),
        text,
        at: 0,
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.at != parser.bytes.len() {
        return Err(parser.invalid("Extra data"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn invalid(&self, what: &str) -> JsonError {
        JsonError::Invalid(format!(
            "jsonx: not JSON text: {what}: char {}",
            self.char_index()
        ))
    }

    fn char_index(&self) -> usize {
        self.text
            .get(..self.at)
            .map_or(self.at, |s| s.chars().count())
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.bytes[self.at..].starts_with(literal.as_bytes()) {
            self.at += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::Unsupported("JSON nested too deeply".into()));
        }
        match self.bytes.get(self.at) {
            None => Err(self.invalid("Expecting value")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b'n') if self.eat("null") => Ok(Value::Null),
            Some(b't') if self.eat("true") => Ok(Value::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Value::Bool(false)),
            Some(b'N') if self.eat("NaN") => Ok(Value::Float(f64::NAN)),
            Some(b'I') if self.eat("Infinity") => Ok(Value::Float(f64::INFINITY)),
            Some(b'-') if self.eat("-Infinity") => Ok(Value::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.invalid("Expecting value")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.bytes.get(self.at) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        // Python's NUMBER_RE: (-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?
        let start = self.at;
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.bytes.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => {
                self.at = start;
                return Err(self.invalid("Expecting value"));
            }
        }
        let int_end = self.at;
        let mut is_float = false;
        if self.bytes.get(self.at) == Some(&b'.') {
            let dot = self.at;
            self.at += 1;
            if self.digits() == 0 {
                self.at = dot;
            } else {
                is_float = true;
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            let e = self.at;
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            if self.digits() == 0 {
                self.at = e;
            } else {
                is_float = true;
            }
        }
        let text = &self.text[start..self.at];
        if is_float {
            let f: f64 = text.parse().map_err(|_| self.invalid("bad number"))?;
            return Ok(Value::Float(f));
        }
        let digits = &self.text[start..int_end];
        if digits.trim_start_matches('-').len() > MAX_INT_DIGITS {
            return Err(JsonError::Invalid(
                "jsonx: not JSON text: Exceeds the limit (4300 digits) for integer string conversion".into(),
            ));
        }
        match digits.parse::<i64>() {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) if digits.parse::<u64>().is_ok() => Ok(Value::BigInt(digits.to_string())),
            // The Python engine refuses it with the path to it (engine/payloads.py): its words.
            Err(_) => Err(JsonError::Unsupported("an integer beyond 64 bits".into())),
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let chunk = self
            .text
            .get(self.at..self.at + 4)
            .filter(|c| c.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.invalid("Invalid \\uXXXX escape"))?;
        self.at += 4;
        u32::from_str_radix(chunk, 16).map_err(|_| self.invalid("Invalid \\uXXXX escape"))
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.at += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.at;
            while let Some(&b) = self.bytes.get(self.at) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            out.push_str(&self.text[start..self.at]);
            match self.bytes.get(self.at) {
                None => return Err(self.invalid("Unterminated string starting at")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escaped = self.bytes.get(self.at).copied();
                    self.at += 1;
                    match escaped {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => {
                            let mut code = self.hex4()?;
                            if (0xd800..0xdc00).contains(&code)
                                && self.bytes[self.at..].starts_with(b"\\u")
                            {
                                let back = self.at;
                                self.at += 2;
                                let low = self.hex4()?;
                                if (0xdc00..0xe000).contains(&low) {
                                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                                } else {
                                    self.at = back;
                                }
                            }
                            match char::from_u32(code) {
                                Some(c) => out.push(c),
                                None => {
                                    return Err(JsonError::Unsupported("a lone surrogate".into()))
                                }
                            }
                        }
                        _ => {
                            self.at -= 1;
                            return Err(self.invalid("Invalid \\escape"));
                        }
                    }
                }
                Some(_) => return Err(self.invalid("Invalid control character at")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.at += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.at) == Some(&b']') {
            self.at += 1;
            return Ok(Value::List(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::List(items));
                }
                _ => return Err(self.invalid("Expecting ',' delimiter")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.at += 1;
        let mut map = Map::new();
        self.skip_ws();
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Ok(Value::Map(map));
        }
        loop {
            self.skip_ws();
            if self.bytes.get(self.at) != Some(&b'"') {
                return Err(self.invalid("Expecting property name enclosed in double quotes"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.bytes.get(self.at) != Some(&b':') {
                return Err(self.invalid("Expecting ':' delimiter"));
            }
            self.at += 1;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            map.insert(key, value); // a repeated key keeps its place, takes the new value
            self.skip_ws();
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Map(map));
                }
                _ => return Err(self.invalid("Expecting ',' delimiter")),
            }
        }
    }
}

// -- printing --------------------------------------------------------------------------

/// How to print: `json.dumps(..., ensure_ascii=True, allow_nan=False)` (plain) or jsonx.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The worker's metadata encoder: ASCII-only output, no non-finite floats.
    PlainAscii,
    /// `jsonx.dumps`: UTF-8 output, non-finite floats as tagged objects.
    Jsonx,
}

/// Compact JSON text; `Err` when the style cannot carry a value (the caller decides).
pub fn dumps(value: &Value, style: Style) -> Result<String, String> {
    let mut out = String::new();
    write_value(&mut out, value, style)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value, style: Style) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::BigInt(digits) => out.push_str(&normalize_big(digits)),
        Value::Float(f) if f.is_finite() => out.push_str(&float_repr(*f)),
        Value::Float(f) => {
            if style == Style::PlainAscii {
                return Err(format!(
                    "Out of range float values are not JSON compliant: {}",
                    float_repr(*f)
                ));
            }
            out.push_str(&format!(
                "{{\"{TAG}\":\"float\",\"v\":\"{}\"}}",
                float_repr(*f)
            ));
        }
        Value::Str(s) => write_str(out, s, style == Style::PlainAscii),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, style)?;
            }
            out.push(']');
        }
        Value::Map(map) => {
            if style == Style::Jsonx && map.contains_key(TAG) {
                return Err("a dict with a $st key".into());
            }
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key, style == Style::PlainAscii);
                out.push(':');
                write_value(out, item, style)?;
            }
            out.push('}');
        }
        Value::Time(_) => return Err("a datetime".into()),
    }
    Ok(())
}

fn normalize_big(digits: &str) -> String {
    // Python prints int(text): no leading zeros are possible in JSON, and "-0" is short.
    digits.to_string()
}

/// `json.dumps` string escaping.
pub fn write_str(out: &mut String, s: &str, ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ascii && (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` (shortest round-trip digits, Python's layout).
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{:e}", f.abs()); // e.g. "1.2345e-5", shortest round-trip digits
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let decpt = exponent + 1; // value = 0.DIGITS x 10^decpt
    let n = digits.len() as i32;
    if !(-3..=16).contains(&decpt) {
        let (first, rest) = digits.split_at(1);
        let e = decpt - 1;
        let mantissa = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let esign = if e < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{esign}{:02}", e.abs());
    }
    let body = if decpt <= 0 {
        format!("0.{}{}", "0".repeat((-decpt) as usize), digits)
    } else if decpt >= n {
        format!("{}{}.0", digits, "0".repeat((decpt - n) as usize))
    } else {
        let (a, b) = digits.split_at(decpt as usize);
        format!("{a}.{b}")
    };
    format!("{sign}{body}")
}

/// Python's `repr(str)`, for error messages (exact for ASCII; other text is kept as is).
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python() {
        for (f, text) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (1.5e-7, "1.5e-07"),
            (123456.789, "123456.789"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ] {
            assert_eq!(float_repr(f), text);
        }
    }

    #[test]
    fn objects_keep_first_position_last_value() {
        let value = parse(r#"{"b": 1, "a": 2, "b": 3}"#).unwrap();
        assert_eq!(dumps(&value, Style::Jsonx).unwrap(), r#"{"b":3,"a":2}"#);
    }

    #[test]
    fn python_literals_and_escapes() {
        let value = parse(r#"[NaN, -Infinity, "\u00e9\ud83d\ude00", 1E2, -0]"#).unwrap();
        assert_eq!(
            dumps(&value, Style::Jsonx).unwrap(),
            "[{\"$st\":\"float\",\"v\":\"nan\"},{\"$st\":\"float\",\"v\":\"-inf\"},\"é😀\",100.0,0]"
        );
        let text = parse(r#"["é😀\u0001"]"#).unwrap();
        assert_eq!(
            dumps(&text, Style::PlainAscii).unwrap(),
            r#"["\u00e9\ud83d\ude00\u0001"]"#
        );
    }

    #[test]
    fn errors_are_values() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "\"\\x\"",
            "\"a\u{1}\"",
            "-",
            "[\"\\ud800\"]",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse("{\"$st\": 1}"),
            Err(JsonError::Unsupported(_))
        ));
        assert!(matches!(
            parse(&"[".repeat(300)),
            Err(JsonError::Unsupported(_))
        ));
    }
}
