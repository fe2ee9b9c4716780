//! The generated `wsauth.v1` gRPC code.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("wsauth.v1");

/// The encoded `FileDescriptorSet` of every wsauth proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wsauth_descriptor.bin"));
