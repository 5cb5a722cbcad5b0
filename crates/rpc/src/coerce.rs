//! Reading argument values as Transmission reads them (§2.2): clients disagree on types, and
//! Transmission accepts more than one for most. A value of an unusable type reads as absent,
//! which makes the key ignored, never an error.

use serde_json::{Map, Value};

/// The arguments object of a request.
pub(crate) type Args = Map<String, Value>;

/// An integer: a JSON integer, a bool (1/0, as Transmission's `getInt`), or a finite real,
/// truncated. Transmission ignores reals, but Flood sends `speed-limit-up` as bytes/1024,
/// which can be fractional; truncating keeps what the user meant.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            // The range check keeps huge reals from saturating into a wrong value.
            (f.is_finite() && f > i64::MIN as f64 && f < i64::MAX as f64).then_some(f.trunc() as i64)
        }),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// A double: any JSON number, or a string holding one (Transmission's `getReal`).
/// transmission-remote writes `1.5000`, and `2` for 2.0.
pub(crate) fn double(v: &Value) -> Option<f64> {
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    f.is_finite().then_some(f)
}

/// A bool: `true`/`false`, the integers 0 and 1, or the strings `"true"`/`"false"`.
pub(crate) fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// An integer that fits `T` (a negative or too large limit is ignored rather than wrapped).
pub(crate) fn int_in<T: TryFrom<i64>>(v: &Value) -> Option<T> {
    T::try_from(int(v)?).ok()
}

/// The integers of a list that fit `T`; other items are skipped, as Transmission skips them.
pub(crate) fn int_list<T: TryFrom<i64>>(v: &Value) -> Option<Vec<T>> {
    Some(v.as_array()?.iter().filter_map(int_in).collect())
}

/// The strings of a list; other items are skipped.
pub(crate) fn str_list(v: &Value) -> Option<Vec<String>> {
    Some(v.as_array()?.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
}

/// Typed access to an arguments object by key.
pub(crate) trait ArgsExt {
    fn int_of<T: TryFrom<i64>>(&self, key: &str) -> Option<T>;
    fn double_of(&self, key: &str) -> Option<f64>;
    fn bool_of(&self, key: &str) -> Option<bool>;
    fn str_of(&self, key: &str) -> Option<&str>;
    fn string_of(&self, key: &str) -> Option<String>;
    fn int_list_of<T: TryFrom<i64>>(&self, key: &str) -> Option<Vec<T>>;
    fn str_list_of(&self, key: &str) -> Option<Vec<String>>;
}

impl ArgsExt for Args {
    fn int_of<T: TryFrom<i64>>(&self, key: &str) -> Option<T> {
        self.get(key).and_then(int_in)
    }
    fn double_of(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(double)
    }
    fn bool_of(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(boolean)
    }
    fn str_of(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    fn string_of(&self, key: &str) -> Option<String> {
        self.str_of(key).map(str::to_owned)
    }
    fn int_list_of<T: TryFrom<i64>>(&self, key: &str) -> Option<Vec<T>> {
        self.get(key).and_then(int_list)
    }
    fn str_list_of(&self, key: &str) -> Option<Vec<String>> {
        self.get(key).and_then(str_list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ints() {
        assert_eq!(int(&json!(5)), Some(5));
        assert_eq!(int(&json!(-5)), Some(-5));
        assert_eq!(int(&json!(true)), Some(1));
        assert_eq!(int(&json!(false)), Some(0));
        assert_eq!(int(&json!(97.65)), Some(97));
        assert_eq!(int(&json!(1e300)), None);
        assert_eq!(int(&json!("5")), None);
        assert_eq!(int(&json!(null)), None);
        assert_eq!(int(&json!(u64::MAX)), None);
        assert_eq!(int_in::<u32>(&json!(-1)), None);
        assert_eq!(int_in::<u16>(&json!(70000)), None);
        assert_eq!(int_in::<u16>(&json!(51413)), Some(51413));
    }

    #[test]
    fn doubles() {
        assert_eq!(double(&json!(2)), Some(2.0));
        assert_eq!(double(&json!(1.5)), Some(1.5));
        assert_eq!(double(&json!("1.25")), Some(1.25));
        assert_eq!(double(&json!("NaN")), None);
        assert_eq!(double(&json!("inf")), None);
        assert_eq!(double(&json!(true)), None);
        // transmission-remote's own formatting of 1.5.
        let parsed: Value = serde_json::from_str("1.5000").unwrap();
        assert_eq!(double(&parsed), Some(1.5));
    }

    #[test]
    fn bools() {
        assert_eq!(boolean(&json!(true)), Some(true));
        assert_eq!(boolean(&json!(0)), Some(false));
        assert_eq!(boolean(&json!(1)), Some(true));
        assert_eq!(boolean(&json!(2)), None);
        assert_eq!(boolean(&json!("true")), Some(true));
        assert_eq!(boolean(&json!("false")), Some(false));
        assert_eq!(boolean(&json!("yes")), None);
    }

    #[test]
    fn lists_skip_wrong_items() {
        assert_eq!(int_list::<u32>(&json!([1, "x", 2.7, -1, true])), Some(vec![1, 2, 1]));
        assert_eq!(str_list(&json!(["a", 1, "b"])), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(int_list::<u32>(&json!(3)), None);
    }
}
