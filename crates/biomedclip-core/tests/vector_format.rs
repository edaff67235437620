use biomedclip_core::vector_format::*;
use biomedclip_core::vector_ops::*;
use half::f16;
use proptest::prelude::*;

#[test]
fn parses_with_whitespace() {
    assert_eq!(parse_text::<f32>(" [ 1 , 2.5,-3e2 ] ").unwrap(), vec![1.0, 2.5, -300.0]);
    assert_eq!(parse_text::<f32>("[1]").unwrap(), vec![1.0]);
}

#[test]
fn rejects_bad_text() {
    let cases = [
        ("", "must start"),
        ("[]", "at least 1 dimension"),
        ("[ ]", "at least 1 dimension"),
        ("[1,2", "must end"),
        ("1,2]", "must start"),
        ("[1,,2]", "empty element"),
        ("[1,a]", "invalid element"),
        ("[1,NaN]", "NaN or Infinity"),
        ("[inf]", "NaN or Infinity"),
        ("[-Infinity]", "NaN or Infinity"),
        ("[1e39]", "out of range"),
        ("[0x10]", "invalid element"),
        ("[1 2]", "invalid element"),
    ];
    for (input, want) in cases {
        let err = parse_text::<f32>(input).unwrap_err().to_string();
        assert!(err.contains(want), "{input:?}: {err}");
    }
    let too_many = format!("[{}]", vec!["1"; MAX_DIM + 1].join(","));
    assert!(parse_text::<f32>(&too_many).unwrap_err().to_string().contains("more than 16000"));
    let max = format!("[{}]", vec!["1"; MAX_DIM].join(","));
    assert_eq!(parse_text::<f32>(&max).unwrap().len(), MAX_DIM);
}

#[test]
fn half_overflow_is_an_error() {
    assert!(parse_text::<f16>("[65504]").is_ok());
    assert!(parse_text::<f16>("[70000]").unwrap_err().to_string().contains("exceeds the half-precision range (±65504)"));
}

#[test]
fn formats_like_pgvector() {
    assert_eq!(format_text(&[1.0f32, -2.5, 0.0]), "[1,-2.5,0]");
    assert_eq!(format_text(&[1e-40f32]), "[1e-40]");
    assert_eq!(format_text(&[f16::from_f32(0.5)]), "[0.5]");
    // As pgvector's halfvec: the float4 text of the half's exact value (pgvector 0.8.6 prints
    // '[0.1,-0.3,65519]'::halfvec as [0.099975586,-0.30004883,65504]).
    assert_eq!(format_text(&[f16::from_f32(0.1), f16::from_f32(-0.3), f16::from_f32(65504.0)]), "[0.099975586,-0.30004883,65504]");
}

proptest! {
    #[test]
    fn text_round_trips_exactly(v in prop::collection::vec(any::<f32>().prop_filter("finite", |x| x.is_finite()), 1..300)) {
        let back = parse_text::<f32>(&format_text(&v)).unwrap();
        prop_assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn half_text_round_trips_exactly(bits in prop::collection::vec(any::<u16>(), 1..200)) {
        let v: Vec<f16> = bits.into_iter().map(f16::from_bits).filter(|x| x.is_finite()).collect();
        prop_assume!(!v.is_empty());
        let back = parse_text::<f16>(&format_text(&v)).unwrap();
        // -0 and 0 compare equal; compare bit patterns to be strict about every other value.
        prop_assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn binary_round_trips(v in prop::collection::vec(-1e30f32..1e30, 1..300)) {
        let bytes = encode_binary(&v);
        prop_assert_eq!(bytes.len(), 4 + 4 * v.len());
        prop_assert_eq!(decode_binary::<f32>(&bytes).unwrap(), v);
    }

    #[test]
    fn text_parser_never_panics(s in "\\PC{0,200}", t in "[\\[\\]0-9eE.,+\\- naNIfy]{0,60}") {
        let _ = parse_text::<f32>(&s);
        let _ = parse_text::<f16>(&t);
        let _ = parse_text::<f32>(&t);
    }

    #[test]
    fn binary_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_binary::<f32>(&bytes);
        let _ = decode_binary::<f16>(&bytes);
    }
}

#[test]
fn binary_layout_is_pgvector_wire_format() {
    // dims=2, reserved=0, 1.0f32 = 0x3f800000, -2.0f32 = 0xc0000000, big-endian.
    assert_eq!(encode_binary(&[1.0f32, -2.0]), vec![0, 2, 0, 0, 0x3f, 0x80, 0, 0, 0xc0, 0, 0, 0]);
    // halfvec: 1.0 = 0x3c00.
    assert_eq!(encode_binary(&[f16::from_f32(1.0)]), vec![0, 1, 0, 0, 0x3c, 0x00]);
    assert!(decode_binary::<f32>(&[0, 2, 0, 0, 0x3f, 0x80, 0, 0]).unwrap_err().to_string().contains("expected 12 bytes"));
    assert!(decode_binary::<f32>(&[0, 1, 0, 1, 0x3f, 0x80, 0, 0]).unwrap_err().to_string().contains("reserved"));
    assert!(decode_binary::<f32>(&[0x7f, 0xff, 0, 0]).unwrap_err().to_string().contains("more than"));
    assert!(decode_binary::<f32>(&[0, 1, 0, 0, 0x7f, 0xc0, 0, 0]).unwrap_err().to_string().contains("NaN"));
}

#[test]
fn typmod_parsing() {
    assert_eq!(parse_typmod(&["512"]), Ok(512));
    assert!(parse_typmod(&["0"]).is_err());
    assert!(parse_typmod(&["16001"]).is_err());
    assert!(parse_typmod(&["3", "4"]).is_err());
    assert!(parse_typmod(&["x"]).is_err());
}

#[test]
fn arithmetic_and_errors() {
    assert_eq!(add(&[1.0, 2.0], &[3.0, 4.0]).unwrap(), vec![4.0, 6.0]);
    assert_eq!(sub(&[1.0, 2.0], &[3.0, 4.0]).unwrap(), vec![-2.0, -2.0]);
    assert_eq!(mul(&[1.0, 2.0], &[3.0, 4.0]).unwrap(), vec![3.0, 8.0]);
    assert_eq!(add(&[1.0], &[1.0, 2.0]).unwrap_err().to_string(), "different vector dimensions 1 and 2");
    assert!(mul(&[3e38], &[10.0]).unwrap_err().to_string().contains("overflow"));
    assert_eq!(l2_normalize(&[3.0, 4.0]), vec![0.6, 0.8]);
    assert_eq!(l2_normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
    assert_eq!(subvector(&[1.0, 2.0, 3.0, 4.0], 2, 2).unwrap(), vec![2.0, 3.0]);
    assert_eq!(subvector(&[1.0, 2.0, 3.0], 0, 2).unwrap(), vec![1.0]);
    assert_eq!(subvector(&[1.0, 2.0, 3.0], 3, 9).unwrap(), vec![3.0]);
    assert!(subvector(&[1.0, 2.0, 3.0], 4, 1).is_err());
    assert!(subvector(&[1.0, 2.0, 3.0], 1, 0).is_err());
}

#[test]
fn ordering_and_hash_agree() {
    use std::cmp::Ordering::*;
    assert_eq!(compare(&[1.0, 2.0], &[1.0, 3.0]), Less);
    assert_eq!(compare(&[1.0, 2.0], &[1.0]), Greater);
    assert_eq!(compare(&[0.0], &[-0.0]), Equal);
    assert_eq!(hash(&[0.0, 1.0]), hash(&[-0.0, 1.0]));
    assert_ne!(hash(&[1.0, 2.0]), hash(&[2.0, 1.0]));
}

#[test]
fn sum_state_combines_like_one_pass() {
    let rows = [[1.0f32, 2.0], [3.0, 4.0], [5.0, 9.0]];
    let mut one = SumState::from_array(&[]);
    for r in &rows {
        one.accumulate(r).unwrap();
    }
    let mut left = SumState::from_array(&[]);
    left.accumulate(&rows[0]).unwrap();
    let mut right = SumState::from_array(&[]);
    right.accumulate(&rows[1]).unwrap();
    right.accumulate(&rows[2]).unwrap();
    left.combine(&right).unwrap();
    assert_eq!(left, one);
    assert_eq!(one.avg().unwrap().unwrap(), vec![3.0, 5.0]);
    assert_eq!(one.sum().unwrap().unwrap(), vec![9.0, 15.0]);
    assert_eq!(SumState::from_array(&one.to_array()), one);
    assert!(SumState::from_array(&[]).avg().is_none());
    assert!(one.accumulate(&[1.0]).unwrap_err().to_string().contains("different vector dimensions 2 and 1"));
}

/// Element text as PostgreSQL 15's float4out prints the same float4 values (captured from
/// `SELECT x::float4::text`); the pg_regress suite compares a 2,214-value sweep live.
#[test]
fn element_text_matches_postgresql_float4out() {
    use biomedclip_core::vector_format::push_shortest_f32;
    let cases: [(f32, &str); 14] = [
        (f32::from_bits(0x0f800000), "1.2621775e-29"),
        (f32::from_bits(0xeb000000), "-1.5474251e+26"),
        (0.000244140625, "0.00024414062"),
        (2589076.2, "2.5890762e+06"),
        (50331648.0, "5.0331648e+07"),
        (100663296.0, "1.00663296e+08"),
        (805306370.0, "8.0530637e+08"),
        (1.5e38, "1.5e+38"),
        (-1e-7, "-1e-07"),
        (1234567.0, "1.234567e+06"),
        (123456.0, "123456"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-0.0, "-0"),
    ];
    for (x, expected) in cases {
        let mut out = String::new();
        push_shortest_f32(&mut out, x);
        assert_eq!(out, expected, "{x:e}");
    }
}
