//! The wire format between PostgreSQL backends and the shared inference service
//! (`crates/biomedclip-inference`), over a Unix socket in a 0700 directory under the data directory.
//!
//! Every message is one frame: a little-endian `u32` body length, then the body, whose first
//! byte is the message tag. Every count and length inside is checked against the bytes that are
//! actually there (and against [`MAX_FRAME`]) before anything is allocated, so a corrupt or
//! hostile peer gets an error, never an allocation of its choosing.
//!
//! A backend has at most one request outstanding. Each request names the model (manifest
//! SHA-256) whose tokenizer and image size produced its inputs; the service refuses a request
//! for any other model, and every answer names the model that computed it, so that a reload can
//! never mix two models in one result.

use crate::model::Output;
use std::io::{self, Read, Write};

/// Bumped whenever a message changes shape; the service refuses other versions.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest frame either side accepts: 64 MiB (256 images of 3×224×224 bytes is 37 MiB).
pub const MAX_FRAME: usize = 64 << 20;

/// The socket, relative to the data directory (which is the working directory of backends and
/// of the service, so the path never exceeds the 107 bytes a socket address can hold).
pub const SOCKET_DIR: &str = "biomedclip_inference";
pub const SOCKET_NAME: &str = "service.sock";

/// Why the service did not compute a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorKind {
    /// The model could not be loaded; the message is the load error (as backend mode words it).
    ModelLoad = 1,
    /// The request was made for another model than the one the service runs.
    ModelChanged = 2,
    /// Too many connections or requests; try again later.
    Busy = 3,
    /// The request was cancelled by its backend.
    Cancelled = 4,
    /// ONNX Runtime failed on the batch.
    Runtime = 5,
    /// The model produced an invalid embedding (NaN, infinity, wrong shape).
    BadOutput = 6,
    /// The request broke the protocol (wrong sizes, a second request while one is pending).
    Protocol = 7,
}

impl ErrorKind {
    fn from_u8(b: u8) -> io::Result<Self> {
        use ErrorKind::*;
        Ok(match b {
            1 => ModelLoad,
            2 => ModelChanged,
            3 => Busy,
            4 => Cancelled,
            5 => Runtime,
            6 => BadOutput,
            7 => Protocol,
            _ => return Err(bad(format!("unknown error kind {b}"))),
        })
    }
}

/// A load error as the service saw it, with the SQLSTATE class backend mode would give it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceError {
    pub kind: ErrorKind,
    /// For [`ErrorKind::ModelLoad`]: which [`crate::model::ModelError`] it was (see
    /// `model_error_code`), so that both modes raise the same SQLSTATE.
    pub code: u8,
    pub message: String,
}

/// What the service runs, sent once per connection. The backend verifies the hashes itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDescription {
    pub model_dir: String,
    pub manifest_sha256: String,
    pub manifest_json: Vec<u8>,
    pub tokenizer_json: Vec<u8>,
    pub provider_in_use: String,
    pub provider_fallback: String,
    pub ort_library: String,
    pub ort_library_sha256: String,
    pub loaded_at: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Hello {
        version: u32,
    },
    /// `count` images of `size`×`size` interleaved RGB bytes (the model's view, before
    /// normalization, which the service does with the manifest's mean and std).
    Images {
        id: u64,
        model_sha256: String,
        output: Output,
        size: u32,
        count: u32,
        rgb: Vec<u8>,
    },
    /// Token id sequences, unpadded.
    Texts {
        id: u64,
        model_sha256: String,
        output: Output,
        sequences: Vec<Vec<u32>>,
    },
    Cancel {
        id: u64,
    },
    Status,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Welcome {
        pid: u32,
        model: Result<ModelDescription, ServiceError>,
    },
    /// Rows of `dim` values, row after row: L2-normalized embeddings, or the features asked for.
    Embeddings {
        id: u64,
        model_sha256: String,
        dim: u32,
        values: Vec<f32>,
    },
    Failed {
        id: u64,
        error: ServiceError,
    },
    /// The service's counters as a JSON object.
    Status {
        json: String,
    },
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn output_code(o: Output) -> u8 {
    match o {
        Output::Embeddings => 0,
        Output::Features => 1,
    }
}

fn output_from(b: u8) -> io::Result<Output> {
    match b {
        0 => Ok(Output::Embeddings),
        1 => Ok(Output::Features),
        _ => Err(bad(format!("unknown output kind {b}"))),
    }
}

struct Encoder(Vec<u8>);

impl Encoder {
    fn new(tag: u8) -> Self {
        Encoder(vec![0, 0, 0, 0, tag])
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn error(&mut self, e: &ServiceError) {
        self.u8(e.kind as u8);
        self.u8(e.code);
        self.str(&e.message);
    }
    fn finish(mut self) -> io::Result<Vec<u8>> {
        let len = self.0.len() - 4;
        if len > MAX_FRAME {
            return Err(bad(format!("message of {len} bytes is over the {MAX_FRAME}-byte limit")));
        }
        self.0[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(self.0)
    }
}

struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if n > self.rest.len() {
            return Err(bad(format!("message truncated: {n} bytes announced, {} left", self.rest.len())));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| bad("string is not UTF-8"))
    }
    fn error(&mut self) -> io::Result<ServiceError> {
        let kind = ErrorKind::from_u8(self.u8()?)?;
        Ok(ServiceError { kind, code: self.u8()?, message: self.str()? })
    }
    fn end(&self) -> io::Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(bad(format!("{} unexpected bytes after the message", self.rest.len())))
        }
    }
}

const HELLO: u8 = 1;
const IMAGES: u8 = 2;
const TEXTS: u8 = 3;
const CANCEL: u8 = 4;
const STATUS: u8 = 5;
const WELCOME: u8 = 101;
const EMBEDDINGS: u8 = 102;
const FAILED: u8 = 103;
const STATUS_REPLY: u8 = 104;

impl Request {
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let e = match self {
            Request::Hello { version } => {
                let mut e = Encoder::new(HELLO);
                e.u32(*version);
                e
            }
            Request::Images { id, model_sha256, output, size, count, rgb } => {
                let mut e = Encoder::new(IMAGES);
                e.u64(*id);
                e.str(model_sha256);
                e.u8(output_code(*output));
                e.u32(*size);
                e.u32(*count);
                e.bytes(rgb);
                e
            }
            Request::Texts { id, model_sha256, output, sequences } => {
                let mut e = Encoder::new(TEXTS);
                e.u64(*id);
                e.str(model_sha256);
                e.u8(output_code(*output));
                e.u32(sequences.len() as u32);
                for s in sequences {
                    e.u32(s.len() as u32);
                    for &t in s {
                        e.u32(t);
                    }
                }
                e
            }
            Request::Cancel { id } => {
                let mut e = Encoder::new(CANCEL);
                e.u64(*id);
                e
            }
            Request::Status => Encoder::new(STATUS),
        };
        e.finish()
    }

    pub fn decode(body: &[u8]) -> io::Result<Request> {
        let mut d = Decoder { rest: body };
        let r = match d.u8()? {
            HELLO => Request::Hello { version: d.u32()? },
            IMAGES => {
                let (id, model_sha256, output) = (d.u64()?, d.str()?, output_from(d.u8()?)?);
                let (size, count) = (d.u32()?, d.u32()?);
                let rgb = d.bytes()?;
                let expected = (count as u64) * 3 * (size as u64) * (size as u64);
                if rgb.len() as u64 != expected || count == 0 {
                    return Err(bad(format!("{count} images of {size}x{size} need {expected} bytes, got {}", rgb.len())));
                }
                Request::Images { id, model_sha256, output, size, count, rgb }
            }
            TEXTS => {
                let (id, model_sha256, output) = (d.u64()?, d.str()?, output_from(d.u8()?)?);
                let n = d.u32()? as usize;
                // Each sequence needs at least its 4-byte length: a count beyond that is a lie.
                if n == 0 || n > d.rest.len() / 4 {
                    return Err(bad(format!("{n} sequences announced in {} bytes", d.rest.len())));
                }
                let mut sequences = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = d.u32()? as usize;
                    let raw = d.take(len.checked_mul(4).ok_or_else(|| bad("sequence length overflows"))?)?;
                    sequences.push(raw.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect());
                }
                Request::Texts { id, model_sha256, output, sequences }
            }
            CANCEL => Request::Cancel { id: d.u64()? },
            STATUS => Request::Status,
            t => return Err(bad(format!("unknown request tag {t}"))),
        };
        d.end()?;
        Ok(r)
    }
}

impl Response {
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let e = match self {
            Response::Welcome { pid, model } => {
                let mut e = Encoder::new(WELCOME);
                e.u32(*pid);
                match model {
                    Ok(m) => {
                        e.u8(1);
                        for s in [&m.model_dir, &m.manifest_sha256] {
                            e.str(s);
                        }
                        e.bytes(&m.manifest_json);
                        e.bytes(&m.tokenizer_json);
                        for s in [&m.provider_in_use, &m.provider_fallback, &m.ort_library, &m.ort_library_sha256, &m.loaded_at] {
                            e.str(s);
                        }
                    }
                    Err(err) => {
                        e.u8(0);
                        e.error(err);
                    }
                }
                e
            }
            Response::Embeddings { id, model_sha256, dim, values } => {
                let mut e = Encoder::new(EMBEDDINGS);
                e.u64(*id);
                e.str(model_sha256);
                e.u32(*dim);
                e.u32(values.len() as u32);
                for v in values {
                    e.0.extend_from_slice(&v.to_le_bytes());
                }
                e
            }
            Response::Failed { id, error } => {
                let mut e = Encoder::new(FAILED);
                e.u64(*id);
                e.error(error);
                e
            }
            Response::Status { json } => {
                let mut e = Encoder::new(STATUS_REPLY);
                e.str(json);
                e
            }
        };
        e.finish()
    }

    pub fn decode(body: &[u8]) -> io::Result<Response> {
        let mut d = Decoder { rest: body };
        let r = match d.u8()? {
            WELCOME => {
                let pid = d.u32()?;
                let model = if d.u8()? == 1 {
                    Ok(ModelDescription {
                        model_dir: d.str()?,
                        manifest_sha256: d.str()?,
                        manifest_json: d.bytes()?,
                        tokenizer_json: d.bytes()?,
                        provider_in_use: d.str()?,
                        provider_fallback: d.str()?,
                        ort_library: d.str()?,
                        ort_library_sha256: d.str()?,
                        loaded_at: d.str()?,
                    })
                } else {
                    Err(d.error()?)
                };
                Response::Welcome { pid, model }
            }
            EMBEDDINGS => {
                let (id, model_sha256, dim, n) = (d.u64()?, d.str()?, d.u32()?, d.u32()? as usize);
                let raw = d.take(n.checked_mul(4).ok_or_else(|| bad("value count overflows"))?)?;
                if dim == 0 || n % dim as usize != 0 {
                    return Err(bad(format!("{n} values are not rows of {dim}")));
                }
                let values = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
                Response::Embeddings { id, model_sha256, dim, values }
            }
            FAILED => Response::Failed { id: d.u64()?, error: d.error()? },
            STATUS_REPLY => Response::Status { json: d.str()? },
            t => return Err(bad(format!("unknown response tag {t}"))),
        };
        d.end()?;
        Ok(r)
    }
}

/// Reads one frame's body (without its length), refusing frames over [`MAX_FRAME`] before
/// allocating. `Ok(None)` at a clean end of stream between frames.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a frame")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(bad(format!("frame of {len} bytes refused (limit {MAX_FRAME})")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)?;
    w.flush()
}

/// A stable number for each [`crate::model::ModelError`] variant, carried in
/// [`ServiceError::code`] so that the backend raises the SQLSTATE backend mode would.
pub fn model_error_code(e: &crate::model::ModelError) -> u8 {
    use crate::model::ModelError::*;
    match e {
        NoModelDir => 1,
        Io { .. } => 2,
        BadManifest(_) => 3,
        HashMismatch { .. } => 4,
        Unsupported(_) => 5,
        InputNames { .. } => 6,
        NotPinned { .. } => 7,
        Interrupted => 8,
        BadOutput(_) => 9,
        Runtime(_) => 10,
        Remote { code, .. } => *code,
        ServiceUnavailable { busy: false, .. } => 11,
        ServiceUnavailable { busy: true, .. } => 12,
        NoFeatures(_) => 13,
    }
}
