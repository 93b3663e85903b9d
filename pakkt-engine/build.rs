//! Builds the BPF programs in `../bpf`, or takes the committed engine
//! object when there is no clang.
//!
//! The engine's object `pakkt_engine.bpf.o` lands in `OUT_DIR` and is
//! embedded with `include_bytes!`. With clang (`CLANG`, else `clang` on
//! `PATH`) it is compiled from `bpf/pakkt_engine.bpf.c` with the flags in
//! `bpf/clang.flags`, as `scripts/build-bpf` compiles the committed copy
//! `bpf/pakkt_engine.bpf.o` (CI checks that the copy is what the sources
//! give). Without clang — also when `CLANG` names a program that does not
//! run, or when the BPF headers are missing — the committed copy is
//! embedded and a cargo warning says so: the agent builds and runs on a
//! machine without clang.
//!
//! The benchmark programs (`bench_drop`, `bench_spoof`) are compiled only
//! with the feature `bench-programs`, and need clang and the headers.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to install when clang or the headers are missing (Debian/Ubuntu).
const INSTALL: &str = "apt-get install clang libbpf-dev";

/// The engine's program, also committed compiled.
const ENGINE: &str = "pakkt_engine.bpf.c";
/// The benchmarks' programs (feature `bench-programs`).
const BENCH_PROGRAMS: [&str; 2] = ["bench_drop.bpf.c", "bench_spoof.bpf.c"];

/// Why a program could not be compiled.
#[derive(Clone)]
enum Failure {
    /// No clang to run, or no BPF headers for it: not the sources' fault.
    Unavailable(String),
    /// clang rejected the sources.
    Compile(String),
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let bpf = manifest.join("..").join("bpf");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    println!("cargo::rerun-if-env-changed=CLANG");
    // The whole directory: sources, headers, flags and the committed object.
    println!("cargo::rerun-if-changed={}", bpf.display());

    let clang = Clang::find();
    let engine_object = out.join(object_name(ENGINE));
    match clang.as_ref().map_err(Clone::clone).and_then(|c| c.compile(&bpf, ENGINE, &engine_object)) {
        Ok(()) => {}
        Err(Failure::Unavailable(why)) => {
            let committed = bpf.join(object_name(ENGINE));
            if let Err(e) = fs::copy(&committed, &engine_object) {
                println!("cargo::error={why}, and the committed {} cannot be read: {e}", committed.display());
                return;
            }
            println!(
                "cargo::warning={why}: embedding the committed bpf/{} instead of compiling bpf/{ENGINE} ({INSTALL} to build it from source)",
                object_name(ENGINE)
            );
        }
        Err(Failure::Compile(message)) => {
            println!("cargo::error={message}");
            return;
        }
    }

    if env::var_os("CARGO_FEATURE_BENCH_PROGRAMS").is_some() {
        for program in BENCH_PROGRAMS {
            let object = out.join(object_name(program));
            match clang.as_ref().map_err(Clone::clone).and_then(|c| c.compile(&bpf, program, &object)) {
                Ok(()) => {}
                Err(Failure::Unavailable(why)) => {
                    println!("cargo::error=the feature bench-programs builds bpf/{program}, but {why}: {INSTALL}");
                    return;
                }
                Err(Failure::Compile(message)) => {
                    println!("cargo::error={message}");
                    return;
                }
            }
        }
    }
}

/// `name.bpf.c` → `name.bpf.o`.
fn object_name(program: &str) -> String {
    program.replace(".bpf.c", ".bpf.o")
}

/// A clang that runs, and the flags to give it.
struct Clang {
    program: String,
    flags: Vec<String>,
}

impl Clang {
    /// `CLANG`, else `clang`, if it runs.
    fn find() -> Result<Self, Failure> {
        let (program, named) = match env::var("CLANG") {
            Ok(program) => (program, true),
            Err(_) => ("clang".to_owned(), false),
        };
        let runs = Command::new(&program).arg("--version").output().is_ok_and(|o| o.status.success());
        if !runs {
            return Err(Failure::Unavailable(if named {
                format!("CLANG={program} does not run")
            } else {
                "clang is not installed".to_owned()
            }));
        }
        let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
            Ok("x86_64") | Err(_) => "x86_64-linux-gnu".to_owned(),
            Ok(other) => format!("{other}-linux-gnu"),
        };
        let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
        let mut flags = read_flags(&manifest.join("..").join("bpf").join("clang.flags"))?;
        flags.push(format!("-I/usr/include/{multiarch}"));
        Ok(Self { program, flags })
    }

    /// Compiles `bpf/<program>` to `object`, in `bpf/` on the bare file
    /// name (as `scripts/build-bpf` does, so that the bytes match).
    fn compile(&self, bpf: &Path, program: &str, object: &Path) -> Result<(), Failure> {
        let output = Command::new(&self.program)
            .current_dir(bpf)
            .args(&self.flags)
            .arg("-c")
            .arg(program)
            .arg("-o")
            .arg(object)
            .output()
            .map_err(|e| Failure::Unavailable(format!("running {}: {e}", self.program)))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("file not found") {
            return Err(Failure::Unavailable(format!("{} finds no BPF headers", self.program)));
        }
        // A real compile error: clang's diagnostics, one line each.
        Err(Failure::Compile(format!(
            "{} failed on bpf/{program}: {}",
            self.program,
            stderr.trim().replace('\n', " | ")
        )))
    }
}

/// The arguments in `bpf/clang.flags`: one a line, without blank lines and
/// `#` comments.
fn read_flags(path: &Path) -> Result<Vec<String>, Failure> {
    let text = fs::read_to_string(path).map_err(|e| Failure::Compile(format!("reading {}: {e}", path.display())))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect())
}
