//! Generated protobuf types and gRPC stubs shared by every Crawbl component.
//!
//! Modules mirror the proto packages (`crawbl.auth.v1` is [`auth::v1`]).

#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod crawbl {
    pub mod auth {
        pub mod v1 {
            tonic::include_proto!("crawbl.auth.v1");
        }
    }
    pub mod conversation {
        pub mod v1 {
            tonic::include_proto!("crawbl.conversation.v1");
        }
    }
    pub mod runtime {
        pub mod v1 {
            tonic::include_proto!("crawbl.runtime.v1");
        }
    }
    pub mod runtimeproxy {
        pub mod v1 {
            tonic::include_proto!("crawbl.runtimeproxy.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("crawbl.events.v1");
        }
    }
}

pub use crawbl::{auth, conversation, events, runtime, runtimeproxy};

/// Encoded `FileDescriptorSet` of every Crawbl proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/crawbl_descriptor.bin"));
