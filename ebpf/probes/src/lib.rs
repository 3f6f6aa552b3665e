//! Empty on purpose: the programs are the `sysflow-ebpf` binary (src/main.rs), built for
//! bpfel-unknown-none by plugin/build.rs. This library target only exists so that plugin can name
//! the crate as a build-dependency, which makes cargo rebuild the programs when they change.
#![no_std]
