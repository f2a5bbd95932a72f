//! Tells whether a handler's value is the `Err` of a `Result`, without encoding it: a
//! serializer that looks only at the outermost call serde makes and stops there.
//!
//! serde writes `Result<T, E>` as the enum `Result` with the variants `Ok` (index 0) and `Err`
//! (index 1), whatever the format; so a method returning `Result` (or an alias of it) is
//! recognised by its value alone, and the generated code need not say which methods return
//! one. A value of any other type stops the probe at its first call.

use std::fmt;

use serde::ser::{self, Impossible, Serialize};

/// Whether `value` is `Err(_)` of a `Result`.
pub(super) fn is_err<T: Serialize + ?Sized>(value: &T) -> bool {
    matches!(value.serialize(Probe), Ok(true))
}

/// The serializer: answers `true` for the `Err` variant of an enum named `Result`, and stops
/// every other value with [`Stop`] at once.
struct Probe;

/// How the probe stops on anything that is not a `Result`'s variant. Allocates nothing.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a Result")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Stop
    }
}

/// The serializer methods that stop the probe at once.
macro_rules! stop {
    ($($name:ident($($arg:ty),*);)*) => {
        $(fn $name(self, $(_: $arg),*) -> Result<bool, Stop> {
            Err(Stop)
        })*
    };
}

impl ser::Serializer for Probe {
    type Ok = bool;
    type Error = Stop;
    type SerializeSeq = Impossible<bool, Stop>;
    type SerializeTuple = Impossible<bool, Stop>;
    type SerializeTupleStruct = Impossible<bool, Stop>;
    type SerializeTupleVariant = Impossible<bool, Stop>;
    type SerializeMap = Impossible<bool, Stop>;
    type SerializeStruct = Impossible<bool, Stop>;
    type SerializeStructVariant = Impossible<bool, Stop>;

    stop! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<bool, Stop> {
        Err(Stop)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<bool, Stop> {
        Err(Stop)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _value: &T,
    ) -> Result<bool, Stop> {
        Ok(name == "Result" && variant == "Err")
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
        Err(Stop)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stop> {
        Err(Stop)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Stop> {
        Err(Stop)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Stop> {
        Err(Stop)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
        Err(Stop)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Stop> {
        Err(Stop)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Stop> {
        Err(Stop)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::is_err;

    #[test]
    fn only_the_err_of_a_result_is_an_error() {
        assert!(is_err(&Err::<u64, String>("no".into())));
        assert!(is_err(&Err::<(), ()>(())));
        assert!(!is_err(&Ok::<u64, String>(7)));
        assert!(!is_err(&7u64));
        assert!(!is_err(&()));
        assert!(!is_err(&Some(Err::<u8, u8>(1))));
        assert!(!is_err(&vec![Err::<u8, u8>(1)]));
        assert!(!is_err(&"Err"));
    }
}
