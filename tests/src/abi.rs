//! Numbers and encodings of the proxy-wasm ABI 0.2.1, as the Rust SDK 0.2.5 speaks it.
//!
//! Only values; no behaviour. The host calls in the other modules map their raw `u32` arguments
//! through these types so an unknown value is reported by name instead of guessed at.

/// Result code every host call returns (`proxy_status_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The key, queue, metric or buffer does not exist.
    NotFound = 1,
    /// An argument is out of range or malformed.
    BadArgument = 2,
    /// The value could not be serialized.
    SerializationFailure = 3,
    /// The input could not be parsed.
    ParseFailure = 4,
    /// A queue is empty.
    Empty = 7,
    /// Shared data was changed since the caller read it (stale `cas`).
    CasMismatch = 8,
    /// The host failed.
    InternalFailure = 10,
}

impl Status {
    /// The raw code returned to the module.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// Which header map a header call addresses (`proxy_map_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    /// Request headers of the current stream.
    RequestHeaders,
    /// Request trailers of the current stream.
    RequestTrailers,
    /// Response headers of the current stream.
    ResponseHeaders,
    /// Response trailers of the current stream.
    ResponseTrailers,
    /// Headers of the HTTP call response being delivered.
    HttpCallResponseHeaders,
    /// Trailers of the HTTP call response being delivered.
    HttpCallResponseTrailers,
}

impl MapType {
    /// Decodes a raw map type; gRPC metadata maps are not supported by this host.
    pub fn from_raw(raw: u32) -> Option<MapType> {
        Some(match raw {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// Which buffer a buffer call addresses (`proxy_buffer_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferType {
    /// Request body of the current stream.
    RequestBody,
    /// Response body of the current stream.
    ResponseBody,
    /// Body of the HTTP call response being delivered.
    HttpCallResponseBody,
    /// The VM configuration (Envoy `vm_config.configuration`).
    VmConfiguration,
    /// The plugin configuration (Envoy `configuration`).
    PluginConfiguration,
}

impl BufferType {
    /// Decodes a raw buffer type; TCP and gRPC buffers are not supported by this host.
    pub fn from_raw(raw: u32) -> Option<BufferType> {
        Some(match raw {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            4 => BufferType::HttpCallResponseBody,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            _ => return None,
        })
    }
}

/// Log levels (`proxy_log_level_t`), ordered from most to least verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Trace.
    Trace = 0,
    /// Debug.
    Debug = 1,
    /// Info.
    Info = 2,
    /// Warn.
    Warn = 3,
    /// Error.
    Error = 4,
    /// Critical.
    Critical = 5,
}

impl LogLevel {
    /// Decodes a raw level.
    pub fn from_raw(raw: u32) -> Option<LogLevel> {
        Some(match raw {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }
}

/// Stream addressed by `proxy_continue_stream` / `proxy_close_stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamType {
    /// The HTTP request direction.
    Request,
    /// The HTTP response direction.
    Response,
}

impl StreamType {
    /// Decodes a raw stream type; TCP streams (2, 3) are not supported by this host.
    pub fn from_raw(raw: u32) -> Option<StreamType> {
        match raw {
            0 => Some(StreamType::Request),
            1 => Some(StreamType::Response),
            _ => None,
        }
    }
}

/// Kind of a metric (`proxy_metric_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Monotonic counter.
    Counter = 0,
    /// Gauge (set / add / subtract).
    Gauge = 1,
    /// Histogram (record samples).
    Histogram = 2,
}

impl MetricType {
    /// Decodes a raw metric type.
    pub fn from_raw(raw: u32) -> Option<MetricType> {
        Some(match raw {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

/// Serializes header pairs the way the ABI passes maps: a `u32` count, then a `(u32 key_len,
/// u32 value_len)` pair per entry, then each key and value followed by a NUL byte. All
/// integers are little-endian.
pub fn serialize_map(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses a serialized map (see [`serialize_map`]). `None` when the bytes are truncated or a
/// key is not UTF-8; an empty input is an empty map, as the SDK sends for `vec![]`.
pub fn deserialize_map(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(raw) as usize)
    };
    let count = u32_at(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let key_len = u32_at(4 + i * 8)?;
        let value_len = u32_at(8 + i * 8)?;
        let key = bytes.get(data..data + key_len)?;
        data += key_len + 1;
        let value = bytes.get(data..data + value_len)?;
        data += value_len + 1;
        pairs.push((String::from_utf8(key.to_vec()).ok()?, value.to_vec()));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trips() {
        let pairs = vec![(":path".to_string(), b"/a".to_vec()), ("x".to_string(), Vec::new())];
        assert_eq!(deserialize_map(&serialize_map(&pairs)), Some(pairs));
        assert_eq!(deserialize_map(&[]), Some(Vec::new()));
        assert_eq!(deserialize_map(&[1, 0, 0, 0, 9]), None);
    }
}
