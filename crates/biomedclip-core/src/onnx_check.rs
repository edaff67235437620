//! Checks on ONNX files before they reach ONNX Runtime.
//!
//! A model whose tensors live in external data files is refused: those files are not listed in
//! the manifest, so their bytes would be loaded unverified (and, from memory, ONNX Runtime would
//! resolve their paths against the server's working directory). The check walks the protobuf wire
//! format of `ModelProto` directly: the ONNX schema (onnx.proto3) gives the field numbers, and only
//! the fields that can hold tensors are followed.

/// Field numbers from onnx.proto3.
mod field {
    pub const MODEL_GRAPH: u32 = 7;
    pub const MODEL_FUNCTIONS: u32 = 25;
    pub const FUNCTION_NODE: u32 = 7;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_INITIALIZER: u32 = 5;
    pub const GRAPH_SPARSE_INITIALIZER: u32 = 15;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const ATTRIBUTE_T: u32 = 5;
    pub const ATTRIBUTE_G: u32 = 6;
    pub const ATTRIBUTE_TENSORS: u32 = 10;
    pub const ATTRIBUTE_GRAPHS: u32 = 11;
    pub const ATTRIBUTE_SPARSE_TENSOR: u32 = 22;
    pub const ATTRIBUTE_SPARSE_TENSORS: u32 = 23;
    pub const SPARSE_VALUES: u32 = 1;
    pub const SPARSE_INDICES: u32 = 2;
    pub const TENSOR_EXTERNAL_DATA: u32 = 13;
    pub const TENSOR_DATA_LOCATION: u32 = 14;
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Model,
    Function,
    Graph,
    Node,
    Attribute,
    Sparse,
    Tensor,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

fn fields(buf: &[u8]) -> Result<Vec<(u32, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let number = (key >> 3) as u32;
        let field = match key & 7 {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 => {
                pos = pos.checked_add(8).filter(|&p| p <= buf.len()).ok_or("truncated fixed64")?;
                Field::Other
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length overflow")?;
                let end = pos.checked_add(len).filter(|&e| e <= buf.len()).ok_or("truncated field")?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            5 => {
                pos = pos.checked_add(4).filter(|&p| p <= buf.len()).ok_or("truncated fixed32")?;
                Field::Other
            }
            t => return Err(format!("unsupported wire type {t}")),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn child(kind: Kind, number: u32) -> Option<Kind> {
    use field::*;
    Some(match (kind, number) {
        (Kind::Model, MODEL_GRAPH) => Kind::Graph,
        (Kind::Model, MODEL_FUNCTIONS) => Kind::Function,
        (Kind::Function, FUNCTION_NODE) | (Kind::Graph, GRAPH_NODE) => Kind::Node,
        (Kind::Graph, GRAPH_INITIALIZER) => Kind::Tensor,
        (Kind::Graph, GRAPH_SPARSE_INITIALIZER) => Kind::Sparse,
        (Kind::Node, NODE_ATTRIBUTE) => Kind::Attribute,
        (Kind::Attribute, ATTRIBUTE_T | ATTRIBUTE_TENSORS) => Kind::Tensor,
        (Kind::Attribute, ATTRIBUTE_G | ATTRIBUTE_GRAPHS) => Kind::Graph,
        (Kind::Attribute, ATTRIBUTE_SPARSE_TENSOR | ATTRIBUTE_SPARSE_TENSORS) => Kind::Sparse,
        (Kind::Sparse, SPARSE_VALUES | SPARSE_INDICES) => Kind::Tensor,
        _ => return None,
    })
}

fn walk(buf: &[u8], kind: Kind, depth: usize) -> Result<bool, String> {
    if depth > 64 {
        return Err("nesting too deep".into());
    }
    for (number, f) in fields(buf)? {
        match (kind, number, f) {
            (Kind::Tensor, field::TENSOR_DATA_LOCATION, Field::Varint(1)) => return Ok(true),
            (Kind::Tensor, field::TENSOR_EXTERNAL_DATA, Field::Bytes(_)) => return Ok(true),
            (_, n, Field::Bytes(b)) => {
                if let Some(k) = child(kind, n) {
                    if walk(b, k, depth + 1)? {
                        return Ok(true);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// Whether any tensor of the ONNX model refers to external data. Malformed protobuf is an error.
pub fn uses_external_data(model: &[u8]) -> Result<bool, String> {
    walk(model, Kind::Model, 0)
}
