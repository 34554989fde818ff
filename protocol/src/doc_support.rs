//! Sample streams for the documentation examples. Not part of the API.

use ::dbn::encode::{DbnEncodable, EncodeRecord, dbn::Encoder};
use ::dbn::{MboMsg, MetadataBuilder, SType, Schema};

/// A small DBN v3 stream: metadata and two MBO records.
pub fn sample_dbn() -> Vec<u8> {
    let metadata = MetadataBuilder::new()
        .dataset("GLBX.MDP3".to_owned())
        .schema(Some(Schema::Mbo))
        .start(1_609_160_400_000_000_000)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .build();
    let mut out = Vec::new();
    if let Ok(mut encoder) = Encoder::new(&mut out, &metadata) {
        for i in 0..2u64 {
            let mut rec = MboMsg::default();
            rec.hd.instrument_id = 5482;
            rec.hd.ts_event = 1_609_160_400_000_000_000 + i;
            rec.order_id = 647_784_973_705 + i;
            encode(&mut encoder, &rec);
        }
    }
    out
}

/// [`sample_dbn`] compressed with zstd.
pub fn sample_dbn_zst() -> Vec<u8> {
    zstd::bulk::compress(&sample_dbn(), 3).unwrap_or_default()
}

fn encode<W: std::io::Write, R: DbnEncodable>(encoder: &mut Encoder<W>, rec: &R) {
    let _ = encoder.encode_record(rec);
}

/// What an in-memory gateway sends to a client that subscribes and starts: the
/// greeting, the challenge, the auth response, then [`sample_dbn`], in several reads.
pub fn scripted_gateway() -> Vec<Vec<u8>> {
    let dbn = sample_dbn();
    let (head, tail) = dbn.split_at(dbn.len() / 2);
    vec![
        b"lsg_version=0.4.2\n".to_vec(),
        b"cram=t7kNhwj4xqR0QYjzFKtBEG2ec2pXJ4FK\n".to_vec(),
        b"success=1|session_id=mock-3|\n".to_vec(),
        head.to_vec(),
        tail.to_vec(),
    ]
}

/// A self-signed root certificate (public part only) for the TLS doc examples.
pub fn test_root_pem() -> &'static str {
    "-----BEGIN CERTIFICATE-----\nMIIBnzCCAUWgAwIBAgIUHvZb5wxcoJ8F8q7Z0okuzzfYN3swCgYIKoZIzj0EAwIw\nJDEiMCAGA1UEAwwZZGJuLXBpcGUgZG9jIGV4YW1wbGUgcm9vdDAgFw0yNjExMjIx\nNzQyNTJaGA8yMTI2MTAyOTE3NDI1MlowJDEiMCAGA1UEAwwZZGJuLXBpcGUgZG9j\nIGV4YW1wbGUgcm9vdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABOeSG2m9SAWB\n4gTQBUTg+cuxEb1p3KWUhCeYyv+AKGhPB8qpis5aRaRTh8c53LwXH8OZ610eOD/F\n9ZAqpr+GlT2jUzBRMB0GA1UdDgQWBBTsM1ByGR96CThv7vWRoZtz7dQXnjAfBgNV\nHSMEGDAWgBTsM1ByGR96CThv7vWRoZtz7dQXnjAPBgNVHRMBAf8EBTADAQH/MAoG\nCCqGSM49BAMCA0gAMEUCIAhM8COlFiDju68lFQh1fDPOvYGDUvp94dnO31qmHw7Y\nAiEA469zxJQwmjPhBbvLZIgBTw4dr+QocT9aaW9+Eq0Vzag=\n-----END CERTIFICATE-----\n"
}
