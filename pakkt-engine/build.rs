//! Compiles the BPF programs in `../bpf` with `clang -target bpf`.
//!
//! The objects land in `OUT_DIR` and are embedded with `include_bytes!`.
//! `CLANG` names another compiler. A machine without clang or the BPF
//! headers fails here with one line saying what to install.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to install when clang or the headers are missing (Debian/Ubuntu).
const INSTALL: &str = "apt-get install clang libbpf-dev";

/// The C sources, each compiled to `<stem>.o`.
const PROGRAMS: [&str; 3] = ["pakkt_engine.bpf.c", "bench_drop.bpf.c", "bench_spoof.bpf.c"];

/// The headers the sources include.
const HEADERS: [&str; 2] = ["pakkt_common.h", "pakkt_parse.h"];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let bpf = manifest.join("..").join("bpf");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    println!("cargo::rerun-if-env-changed=CLANG");
    for file in HEADERS.iter().chain(&PROGRAMS) {
        println!("cargo::rerun-if-changed={}", bpf.join(file).display());
    }

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    if Command::new(&clang).arg("--version").output().is_err() {
        println!("cargo::error=building the PAKKT Engine needs clang and the BPF headers: {INSTALL}");
        return;
    }
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") | Err(_) => "x86_64-linux-gnu".to_owned(),
        Ok("aarch64") => "aarch64-linux-gnu".to_owned(),
        Ok(other) => format!("{other}-linux-gnu"),
    };
    for program in PROGRAMS {
        let object = out.join(program.replace(".bpf.c", ".bpf.o"));
        if let Err(message) = compile(&clang, &bpf, &multiarch, program, &object) {
            println!("cargo::error={message}");
            return;
        }
    }
}

fn compile(clang: &str, bpf: &Path, multiarch: &str, program: &str, object: &Path) -> Result<(), String> {
    let output = Command::new(clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-I")
        .arg(bpf)
        .arg("-c")
        .arg(bpf.join(program))
        .arg("-o")
        .arg(object)
        .output()
        .map_err(|e| format!("running {clang}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("file not found") {
        return Err(format!("building the PAKKT Engine needs the BPF headers: {INSTALL}"));
    }
    // A real compile error: show clang's diagnostics on one line each.
    Err(format!("{clang} failed on bpf/{program}: {}", stderr.trim().replace('\n', " | ")))
}
