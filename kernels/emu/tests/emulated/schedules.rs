//! Schedules (`LaunchOptions::schedules`, `CUDA_EMU_SCHEDULE`): the order of a block's threads
//! changes what a racy kernel computes, and the schedule comparison (one launch under several
//! schedules from the same memory) turns any such difference into a fault. CI runs the whole
//! parity suite under `CUDA_EMU_SCHEDULE=ascending,descending,random:1` (`.ci/run`), so every
//! project kernel's outputs are compared bit for bit across those schedules.

use kernels_emu::{FaultKind, HazardKind, LaunchOptions, Schedule};

use crate::common::*;
use crate::params;

fn compare(schedules: &[Schedule]) -> LaunchOptions {
    LaunchOptions {
        schedules: schedules.to_vec(),
        racecheck: false,
    }
}

const THREE: [Schedule; 3] = [
    Schedule::Ascending,
    Schedule::Descending,
    Schedule::Random(1),
];

/// emu_selftest_neighbour without its barrier reads its neighbour's slot before (ascending:
/// 255 threads) or after (descending: all but thread 255) the neighbour wrote it.
#[test]
fn a_missing_barrier_computes_different_results_under_different_schedules() {
    let x: DevVec<f32> = (0..256).map(|i| i as f32 + 1.0).collect();
    let out = |schedule, sync: i32| {
        let mut y = nan_vec(256);
        run_with(
            "emu_selftest_neighbour",
            1,
            256,
            &LaunchOptions::schedule(schedule),
            &params!(x.as_ptr(), y.as_mut_ptr(), sync),
        )
        .unwrap();
        y.to_vec()
    };
    let nans = |y: &[f32]| y.iter().filter(|v| v.is_nan()).count();
    assert_eq!(nans(&out(Schedule::Ascending, 0)), 255);
    assert_eq!(nans(&out(Schedule::Descending, 0)), 1);
    let want: Vec<f32> = (0..256).map(|i| x[(i + 1) % 256]).collect();
    for s in THREE {
        assert_eq!(out(s, 1), want, "{s}");
    }
}

/// The comparison fails on the planted race, naming the word, the values and the schedules;
/// with the barrier it passes and leaves the right result.
#[test]
fn the_schedule_comparison_fails_on_a_planted_race() {
    let x: DevVec<f32> = (0..256).map(|i| i as f32 + 1.0).collect();
    let mut y = nan_vec(256);
    let fault = run_with(
        "emu_selftest_neighbour",
        1,
        256,
        &compare(&THREE),
        &params!(x.as_ptr(), y.as_mut_ptr(), 0i32),
    )
    .expect_err("results differ between schedules");
    assert_eq!(fault.kind, FaultKind::Trap);
    assert_eq!(
        fault.hazard.map(|h| h.kind),
        Some(HazardKind::ScheduleDependent)
    );
    // Element 0 is NaN under ascending (slot 1 not yet written), 2 under descending.
    assert_eq!(fault.address, y.addr());
    for want in [
        "Results of emu_selftest_neighbour depend on the schedule (a race)".to_string(),
        format!("(allocation #{} of 1024 bytes, byte 0)", y.id()),
        "under ascending but 0x40000000 (2) under descending; 256 word(s) differ".to_string(),
    ] {
        assert!(fault.message.contains(&want), "{want:?} not in:\n{fault}");
    }
    let mut y = nan_vec(256);
    run_with(
        "emu_selftest_neighbour",
        1,
        256,
        &compare(&THREE),
        &params!(x.as_ptr(), y.as_mut_ptr(), 1i32),
    )
    .expect("the same results under every schedule");
    let want: Vec<f32> = (0..256).map(|i| x[(i + 1) % 256]).collect();
    assert_eq!(y, want);
}

/// A lost update (every thread does `count += 1` on one shared word) never shows when threads
/// switch only at barriers, in any order; the random schedule's switches at shared accesses
/// expose it, reproducibly for a seed.
#[test]
fn random_switches_at_shared_accesses_expose_a_lost_update() {
    let mut y = nan_vec(1);
    let mut count = |options: &LaunchOptions| {
        let r = run_with(
            "emu_selftest_shared_counter",
            1,
            256,
            options,
            &params!(y.as_mut_ptr()),
        );
        (r, y[0])
    };
    for s in [Schedule::Ascending, Schedule::Descending] {
        assert_eq!(count(&LaunchOptions::schedule(s)), (Ok(()), 256.0), "{s}");
    }
    let both = compare(&[Schedule::Ascending, Schedule::Descending]);
    assert_eq!(count(&both), (Ok(()), 256.0));
    let (r, lost) = count(&LaunchOptions::schedule(Schedule::Random(1)));
    assert!(r.is_ok() && lost < 256.0, "random:1 counted {lost}");
    assert_eq!(count(&LaunchOptions::schedule(Schedule::Random(1))).1, lost);
    let fault = count(&compare(&[Schedule::Ascending, Schedule::Random(1)]))
        .0
        .expect_err("a schedule-dependent result");
    assert_eq!(
        fault.hazard.map(|h| h.kind),
        Some(HazardKind::ScheduleDependent)
    );
    assert!(
        fault.message.contains("0x43800000 (256) under ascending"),
        "{fault}"
    );
}

/// The checking runs take the blocks in the schedule's order too: blocks that all write one
/// word leave the last one's value, which differs between ascending and descending.
#[test]
fn the_comparison_sees_blocks_racing_on_a_word() {
    let mut y = nan_vec(5);
    let fault = run_with(
        "emu_selftest_block_race",
        4,
        32,
        &compare(&[Schedule::Ascending, Schedule::Descending]),
        &params!(y.as_mut_ptr(), -1i32),
    )
    .expect_err("block 3 writes last ascending, block 0 descending");
    assert!(
        fault
            .message
            .contains("is 0x40400000 (3) under ascending but 0x00000000 (0) under descending"),
        "{fault}"
    );
}

/// Between runs the comparison puts back what the kernel wrote, so an in-place kernel
/// (accumulate: y += x) is applied once, not once per schedule; a written buffer outside the
/// device arena could not be put back, and is refused.
#[test]
fn the_comparison_runs_each_schedule_from_the_same_memory() {
    let n = 1000;
    let mut r = rng(21);
    let x = rand_vec(&mut r, n);
    let old = rand_vec(&mut r, n);
    let mut acc = old.clone();
    let (g, b) = cfg_1d(n);
    let k = kernels_emu::kernel("accumulate").unwrap();
    let launch = |p: &kernels_emu::ParamBuffer| unsafe {
        kernels_emu::launch_with(&k, g, b, p.as_bytes(), &compare(&THREE))
    };
    launch(&params!(acc.as_mut_ptr(), x.as_ptr(), n as i32)).expect("deterministic");
    assert_bitwise("accumulate once", &acc, &add_vec(&old, &x));

    let mut host = old.to_vec();
    let fault = launch(&params!(host.as_mut_ptr(), x.as_ptr(), n as i32))
        .expect_err("a host buffer cannot be put back");
    assert_eq!(fault.kind, FaultKind::Trap);
    assert!(
        fault.message.contains("outside the device arena"),
        "{fault}"
    );
}

#[test]
fn schedules_and_racecheck_parse_from_the_environment_values() {
    let parse = LaunchOptions::parse;
    assert_eq!(parse(None, None), Ok(LaunchOptions::default()));
    assert_eq!(
        parse(Some("ascending, descending,random:7"), Some("1")),
        Ok(LaunchOptions {
            schedules: vec![
                Schedule::Ascending,
                Schedule::Descending,
                Schedule::Random(7)
            ],
            racecheck: true,
        })
    );
    assert_eq!(
        parse(Some("descending"), Some("0")).map(|o| o.schedules),
        Ok(vec![Schedule::Descending])
    );
    for (schedule, racecheck, error) in [
        (Some("random"), None, "expected ascending, descending or random:SEED"),
        (Some("sideways"), None, "\"sideways\""),
        (Some("random:x"), None, "\"random:x\""),
        (Some("ascending,,descending"), None, "CUDA_EMU_SCHEDULE"),
        (
            Some("ascending,ascending,ascending,ascending,ascending,ascending,ascending,ascending,ascending"),
            None,
            "9 schedules, at most 8",
        ),
        (None, Some("yes"), "CUDA_EMU_RACECHECK=yes: expected 0 or 1"),
    ] {
        let e = parse(schedule, racecheck).expect_err(error);
        assert!(e.contains(error), "{e:?} lacks {error:?}");
    }
    for s in THREE {
        assert_eq!(s.to_string().parse::<Schedule>(), Ok(s));
    }
}
