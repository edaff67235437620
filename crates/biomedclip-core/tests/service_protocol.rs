//! The service wire format: every message survives a round trip, and malformed frames are
//! refused before any allocation of the announced size.

use biomedclip_core::model::Output;
use biomedclip_core::service_protocol::*;
use std::io::Cursor;

fn round_trip_request(r: Request) {
    let frame = r.encode().unwrap();
    let body = read_frame(&mut Cursor::new(&frame)).unwrap().unwrap();
    assert_eq!(Request::decode(&body).unwrap(), r);
}

fn round_trip_response(r: Response) {
    let frame = r.encode().unwrap();
    let body = read_frame(&mut Cursor::new(&frame)).unwrap().unwrap();
    assert_eq!(Response::decode(&body).unwrap(), r);
}

#[test]
fn every_message_round_trips() {
    round_trip_request(Request::Hello { version: PROTOCOL_VERSION });
    round_trip_request(Request::Images { id: 7, model_sha256: "ab".repeat(32), output: Output::Features, size: 2, count: 2, rgb: (0..24).collect() });
    round_trip_request(Request::Texts { id: u64::MAX, model_sha256: "cd".into(), output: Output::Embeddings, sequences: vec![vec![2, 5, 3], vec![], vec![2, 3]] });
    round_trip_request(Request::Cancel { id: 3 });
    round_trip_request(Request::Status);
    let model = ModelDescription {
        model_dir: "/m".into(),
        manifest_sha256: "ef".repeat(32),
        manifest_json: b"{}".to_vec(),
        tokenizer_json: vec![1, 2, 3],
        provider_in_use: "cpu".into(),
        provider_fallback: String::new(),
        ort_library: "/lib/ort.so".into(),
        ort_library_sha256: "00".into(),
        loaded_at: "2026-12-01 00:00:00+00".into(),
    };
    round_trip_response(Response::Welcome { pid: 42, model: Ok(model) });
    let err = ServiceError { kind: ErrorKind::ModelLoad, code: 4, message: "sha256 of x does not match".into() };
    round_trip_response(Response::Welcome { pid: 42, model: Err(err.clone()) });
    round_trip_response(Response::Embeddings { id: 1, model_sha256: "ab".into(), dim: 2, values: vec![0.5, -0.25, f32::MIN_POSITIVE, 1.0] });
    round_trip_response(Response::Failed { id: 9, error: err });
    round_trip_response(Response::Status { json: "{\"queue\":0}".into() });
}

#[test]
fn oversized_and_empty_frames_are_refused_before_allocating() {
    let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
    let e = read_frame(&mut Cursor::new(huge.to_vec())).unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    let e = read_frame(&mut Cursor::new(u32::MAX.to_le_bytes().to_vec())).unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(read_frame(&mut Cursor::new(0u32.to_le_bytes().to_vec())).is_err());
    // A clean end between frames is not an error; an end inside one is.
    assert!(read_frame(&mut Cursor::new(Vec::new())).unwrap().is_none());
    assert!(read_frame(&mut Cursor::new(vec![5, 0])).is_err());
    assert!(read_frame(&mut Cursor::new(vec![5, 0, 0, 0, 1, 2])).is_err());
}

#[test]
fn counts_that_do_not_match_the_bytes_are_refused() {
    // 1,000,000 sequences announced in a few bytes: refused without reserving space for them.
    let mut body = vec![3u8];
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.push(0); // output: embeddings
    body.extend_from_slice(&1_000_000u32.to_le_bytes());
    body.extend_from_slice(&[0; 8]);
    assert!(Request::decode(&body).unwrap_err().to_string().contains("sequences announced"));
    // A sequence longer than what follows.
    let mut body = vec![3u8];
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.push(0);
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(Request::decode(&body).is_err());
    // Images whose byte count is not count × 3 × size².
    let r = Request::Images { id: 1, model_sha256: String::new(), output: Output::Embeddings, size: 2, count: 2, rgb: vec![0; 24] };
    let mut frame = r.encode().unwrap();
    let last = frame.len() - 1;
    frame.truncate(last);
    let n = frame.len() - 4;
    frame[..4].copy_from_slice(&(n as u32).to_le_bytes());
    let body = read_frame(&mut Cursor::new(&frame)).unwrap().unwrap();
    assert!(Request::decode(&body).is_err());
    // Trailing bytes, unknown tags, embeddings that are not whole rows.
    let mut body = Request::Cancel { id: 1 }.encode().unwrap()[4..].to_vec();
    body.push(0);
    assert!(Request::decode(&body).unwrap_err().to_string().contains("unexpected bytes"));
    assert!(Request::decode(&[99]).is_err());
    // An output kind that does not exist.
    let mut body = Request::Texts { id: 1, model_sha256: String::new(), output: Output::Features, sequences: vec![vec![2]] }.encode().unwrap()[4..].to_vec();
    body[13] = 7;
    assert!(Request::decode(&body).unwrap_err().to_string().contains("unknown output kind 7"));
    let frame = Response::Embeddings { id: 1, model_sha256: String::new(), dim: 3, values: vec![1.0; 4] }.encode().unwrap();
    assert!(Response::decode(&frame[4..]).unwrap_err().to_string().contains("not rows"));
}
