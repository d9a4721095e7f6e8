//! `train doctor`: can this machine train on its GPU? One line per thing the GPU path needs —
//! the driver, each GPU, nvrtc, the prebuilt kernels file, the kernel cache, the kernels
//! loaded on GPU 0, and a training step there checked against the CPU engine — each `ok` or
//! what to do. Exit status 0 when the GPU path is usable, 1 when it is not.
//!
//! It never panics, whatever the machine: no driver, the stand-in driver, a library path that
//! holds something else, `RESNET_CUDA_STANDIN` naming garbage. The runtime facts come from the
//! kernels crate (`kernels::probe`, `kernels::doctor`, `kernels::supply`); a panic anywhere in
//! a check (an op that fails on the GPU panics) is that check's FAIL line.

use kernels::doctor::{DeviceFacts, PrebuiltState};
use kernels::prebuilt::Prebuilt;
use kernels::supply::{self, Mode, Origin, INSTALL_NVRTC};
use kernels::{human_bytes, probe, KERNELS, SOURCES};
use tensor::Device;

use crate::engine::device::ExitWith;
use report::{caught, Report, Status};
use smoke::smoke;

mod report;
mod smoke;

/// `train doctor`.
pub fn run() -> anyhow::Result<()> {
    // Every panic is caught and reported as its check's FAIL line: none may print a backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    println!("train doctor: can this machine train on its GPU?");
    let mut report = Report::default();
    let usable = caught("examining the machine", || examine(&mut report)).unwrap_or_else(|e| {
        report.add(Status::Fail, "doctor", e);
        None
    });
    match usable {
        Some(summary) => {
            println!("GPU path: usable: {summary}");
            Ok(())
        }
        None => {
            let why = report
                .first_failure()
                .map_or_else(|| "see above".to_string(), |l| l.topic.clone());
            Err(ExitWith {
                code: 1,
                message: format!(
                    "the GPU path is not usable here (first failure: {why}); train runs on the \
                     CPU (--device auto)"
                ),
            }
            .into())
        }
    }
}

/// Runs every check, adding its line; the summary of a usable GPU path, else `None`.
fn examine(report: &mut Report) -> Option<String> {
    let driver = probe::driver();
    let devices = match &driver {
        Ok(info) => {
            report_driver(report, info);
            report_devices(report, info)
        }
        Err(e) => {
            let standin = std::env::var_os(probe::STANDIN_ENV).filter(|v| !v.is_empty());
            let fix = if standin.is_some() {
                format!(
                    "unset {} or point it at the stand-in (scripts/emulated-gpu.sh builds it)",
                    probe::STANDIN_ENV
                )
            } else {
                "install the NVIDIA driver (CUDA 13: version 580 or newer); without a GPU, train \
                 runs on the CPU"
                    .to_string()
            };
            report.add(Status::Fail, "driver", format!("{e}. To fix: {fix}"));
            report.add(Status::Skip, "GPUs", "no driver");
            Vec::new()
        }
    };
    let gpu0 = devices.iter().find(|d| d.ordinal == 0);
    let capability = gpu0.map(|d| d.capability);
    let mode = Mode::from_env();
    let nvrtc = probe::nvrtc();
    let prebuilt = kernels::doctor::prebuilt();
    let file_serves = match &prebuilt {
        PrebuiltState::Fresh(file) => capability.is_none_or(|c| file.arch_for(c).is_some()),
        _ => false,
    };
    report_nvrtc(report, &nvrtc, &mode, file_serves, capability.is_some());
    let cache = capability.map(|c| kernels::doctor::cache(&format!("sm_{}{}", c.0, c.1)));

    // Open GPU 0 as `train --device cuda` does, then check the file's images on it too.
    let opened = match (&mode, gpu0) {
        (Err(e), _) => Err(format!("{e}")),
        (_, None) => Err("no GPU".to_string()),
        (Ok(_), Some(_)) => caught("opening GPU 0", || {
            Device::cuda(0).map_err(|e| e.to_string())
        })
        .and_then(|r| r),
    };
    let gpu = opened.as_ref().ok().and_then(|d| d.gpu().cloned());
    report_prebuilt(report, &prebuilt, &nvrtc, &mode, capability, gpu.as_deref());
    match cache {
        Some(facts) => report_cache(report, &facts, capability),
        None => {
            let dir = kernels::nvrtc::DiskCache::from_env();
            let dir = dir.dir().map_or("off".into(), |d| d.display().to_string());
            report.add(
                Status::Skip,
                "kernel cache",
                format!("{dir}: no GPU to compile for"),
            );
        }
    }
    let mode_text = mode.as_ref().map_or("?".into(), |m| m.to_string());
    let dev = match opened {
        Ok(dev) => {
            let origin = gpu.as_ref().map(|g| g.kernel_origin().to_string());
            let count: usize = KERNELS.iter().map(|(_, ks)| ks.len()).sum();
            report.add(
                Status::Ok,
                "kernels",
                format!(
                    "all {count} kernels of {} modules loaded on GPU 0: {}; {}={mode_text}",
                    SOURCES.len(),
                    origin.unwrap_or_default(),
                    supply::MODE_ENV
                ),
            );
            dev
        }
        Err(why) if gpu0.is_none() => {
            report.add(Status::Skip, "kernels", why);
            report.add(Status::Skip, "smoke test", "no GPU");
            return None;
        }
        Err(why) => {
            report.add(Status::Fail, "kernels", kernels_fix(&why));
            report.add(Status::Skip, "smoke test", "the kernels did not load");
            return None;
        }
    };
    match caught("the smoke test", || smoke(&dev)).and_then(|r| r) {
        Ok(text) => report.add(Status::Ok, "smoke test", text),
        Err(e) => {
            report.add(Status::Fail, "smoke test", e);
            return None;
        }
    }
    let gpu = gpu?;
    Some(format!(
        "`train --device cuda` trains on GPU 0 ({}) with {}",
        gpu.name(),
        gpu.kernel_origin()
    ))
}

fn report_driver(report: &mut Report, info: &probe::DriverInfo) {
    let version = format!("CUDA {}.{}", info.version / 1000, info.version % 1000 / 10);
    let text = format!(
        "{}, {version}, {} device(s)",
        info.library, info.device_count
    );
    let text = match &info.standin {
        Some(path) => format!(
            "the stand-in driver {path} ({}), {version}, {} device(s): the kernels run emulated \
             on the CPU, timings mean nothing",
            probe::STANDIN_ENV,
            info.device_count
        ),
        None => text,
    };
    if info.version < 13000 {
        report.add(
            Status::Fail,
            "driver",
            format!(
                "{text}: the kernels come from nvrtc 13 and need a CUDA 13 driver. To fix: \
                 update the NVIDIA driver to version 580 or newer"
            ),
        );
    } else {
        report.add(Status::Ok, "driver", text);
    }
}

fn report_devices(report: &mut Report, info: &probe::DriverInfo) -> Vec<DeviceFacts> {
    let mut found = Vec::new();
    for (ordinal, facts) in kernels::doctor::devices(info).into_iter().enumerate() {
        let topic = format!("GPU {ordinal}");
        match facts {
            Ok(d) => {
                let (major, minor) = d.capability;
                let text = format!(
                    "{}, compute capability {major}.{minor} (sm_{major}{minor}), {} free of {}",
                    d.name,
                    human_bytes(d.free as u64),
                    human_bytes(d.total as u64)
                );
                if major < 8 {
                    report.add(
                        Status::Fail,
                        topic,
                        format!(
                            "{text}: the kernels need compute capability 8.0 or newer (the bf16 \
                             tensor-core instructions). To fix: use an A100, RTX 30xx or newer"
                        ),
                    );
                } else {
                    report.add(Status::Ok, topic, text);
                }
                found.push(d);
            }
            Err(e) => report.add(Status::Fail, topic, format!("{e}")),
        }
    }
    found
}

fn report_nvrtc(
    report: &mut Report,
    nvrtc: &kernels::Result<probe::NvrtcInfo>,
    mode: &kernels::Result<Mode>,
    file_serves: bool,
    have_gpu: bool,
) {
    let serves = if have_gpu {
        "the prebuilt kernels file (below) serves this GPU"
    } else {
        "the prebuilt kernels file (below) serves sm_80 and newer GPUs"
    };
    match (nvrtc, mode) {
        (_, Ok(Mode::Prebuilt)) => report.add(
            Status::Note,
            "nvrtc",
            format!("not used: {}=prebuilt", supply::MODE_ENV),
        ),
        (Ok(info), _) => report.add(
            Status::Ok,
            "nvrtc",
            format!(
                "{}, version {}.{}",
                info.library, info.version.0, info.version.1
            ),
        ),
        (Err(e), Ok(Mode::Auto)) if file_serves => report.add(
            Status::Note,
            "nvrtc",
            format!("{e}. Not needed: {serves}; to compile kernels here instead, {INSTALL_NVRTC}"),
        ),
        (Err(e), _) => report.add(
            Status::Fail,
            "nvrtc",
            format!(
                "{e}. To fix: {INSTALL_NVRTC}; or put the prebuilt kernels file (`cargo xtask \
                 cubins`, below) beside train"
            ),
        ),
    }
}

fn report_prebuilt(
    report: &mut Report,
    state: &PrebuiltState,
    nvrtc: &kernels::Result<probe::NvrtcInfo>,
    mode: &kernels::Result<Mode>,
    capability: Option<(i32, i32)>,
    gpu: Option<&kernels::Gpu>,
) {
    const TOPIC: &str = "prebuilt kernels";
    // Whether the GPU path needs the file: nvrtc cannot (or may not) serve it.
    let needed = match mode {
        Ok(Mode::Prebuilt) => true,
        Ok(Mode::Nvrtc) | Err(_) => false,
        Ok(Mode::Auto) => nvrtc.is_err(),
    };
    let unneeded_status = if needed { Status::Fail } else { Status::Note };
    let build = "build it with `cargo xtask cubins` on a machine with nvrtc";
    match state {
        PrebuiltState::Missing { places, named } => {
            let looked: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
            let text = match (named, needed) {
                (true, _) => format!(
                    "{} ({}) does not exist. To fix: {build}, or unset {}",
                    looked.join(""),
                    supply::FILE_ENV,
                    supply::FILE_ENV
                ),
                (false, true) => format!(
                    "not found (looked for {}). To fix: {build} and put it beside train, or name \
                     it in {}",
                    looked.join(" and "),
                    supply::FILE_ENV
                ),
                (false, false) => format!(
                    "none (looked for {}); needed only where nvrtc is missing: `cargo xtask \
                     cubins` builds it",
                    looked.join(" and ")
                ),
            };
            report.add(unneeded_status, TOPIC, text);
        }
        PrebuiltState::Refused { error, .. } => {
            let text = match needed {
                true => format!("{error}"),
                false => format!("{error} (not used while nvrtc is here)"),
            };
            report.add(
                unneeded_status,
                TOPIC,
                text.trim_start_matches("prebuilt kernels file "),
            );
        }
        PrebuiltState::Fresh(file) => {
            let (status, serves) = serves(file, capability, gpu, needed);
            let path = file.path.as_ref().map(|p| p.display().to_string());
            report.add(
                status,
                TOPIC,
                format!(
                    "{}, fresh ({}; from nvrtc {}.{}, {}){serves}",
                    path.unwrap_or_default(),
                    file.archs().join(" "),
                    file.nvrtc_version.0,
                    file.nvrtc_version.1,
                    human_bytes(file.image_bytes() as u64)
                ),
            );
        }
    }
}

/// What a fresh file does for GPU 0: its status and a clause for its line. Where the GPU
/// runs on nvrtc's kernels, the file's are loaded beside them, to know they would serve.
fn serves(
    file: &Prebuilt,
    capability: Option<(i32, i32)>,
    gpu: Option<&kernels::Gpu>,
    needed: bool,
) -> (Status, String) {
    let fail = if needed { Status::Fail } else { Status::Note };
    let Some(cap) = capability else {
        return (Status::Ok, String::new());
    };
    let modules = match file.modules_for(cap) {
        Ok(m) => m,
        Err(e) => return (fail, format!(": {e}")),
    };
    let arch = modules.first().map(|m| m.arch.clone()).unwrap_or_default();
    let Some(gpu) = gpu else {
        return (Status::Ok, format!("; GPU 0 would load its {arch} images"));
    };
    if let Origin::Prebuilt { .. } = gpu.kernel_origin() {
        return (Status::Ok, format!("; GPU 0 runs its {arch} images"));
    }
    let origin = Origin::Prebuilt {
        path: file.path.clone().unwrap_or_default(),
        arch: arch.clone(),
        nvrtc_version: file.nvrtc_version,
    };
    match gpu.check_modules(&modules, &origin) {
        Ok(n) => (
            Status::Ok,
            format!("; its {arch} images load on GPU 0 ({n} kernels)"),
        ),
        Err(e) => (
            fail,
            format!("; its {arch} images do not load on GPU 0: {e}"),
        ),
    }
}

fn report_cache(
    report: &mut Report,
    facts: &kernels::doctor::CacheFacts,
    capability: Option<(i32, i32)>,
) {
    const TOPIC: &str = "kernel cache";
    let arch = capability.map_or(String::new(), |c| format!("sm_{}{}", c.0, c.1));
    match (&facts.dir, &facts.cached) {
        (None, _) => report.add(
            Status::Note,
            TOPIC,
            format!(
                "off ({}=off): every process compiles the kernels with nvrtc (seconds)",
                kernels::nvrtc::CACHE_ENV
            ),
        ),
        (Some(dir), Ok(n)) => report.add(
            Status::Ok,
            TOPIC,
            format!(
                "{}: {n} of {} modules for {arch} were cached{}",
                dir.display(),
                SOURCES.len(),
                if *n < SOURCES.len() {
                    " (the first GPU run compiles the rest: seconds)"
                } else {
                    ""
                }
            ),
        ),
        (Some(dir), Err(_)) => report.add(
            Status::Note,
            TOPIC,
            format!("{}: not used without nvrtc", dir.display()),
        ),
    }
}

/// The kernels line for a GPU that would not open, with what to do about it.
fn kernels_fix(why: &str) -> String {
    if why.contains("no GPU kernels") {
        why.to_string()
    } else if why.contains("CUDA_ERROR_OUT_OF_MEMORY") {
        format!("{why}. To fix: free GPU memory (another process holds it: nvidia-smi)")
    } else if why.contains("loading module") {
        format!("{why}. To fix: update the NVIDIA driver (580 or newer for CUDA 13)")
    } else {
        why.to_string()
    }
}
