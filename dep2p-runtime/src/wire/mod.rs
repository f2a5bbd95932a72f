//! The wire format (`docs/PROTOCOL.md` is the normative description) and the reader of
//! frames. Nothing here knows the public `Error`: failures are [`WireError`]s.

mod budget;
mod error;
mod frame;
mod header;
mod reader;

pub(crate) use budget::Budget;
pub(crate) use error::WireError;
pub(crate) use frame::*;
pub use frame::{Kind, ALPN, ALPN_V1};
pub(crate) use header::{
    decode_call, decode_metadata, encode_metadata, CallHeader, HeaderLimits, IncomingHeader,
};
pub(crate) use reader::FrameReader;
