//! racecheck (`LaunchOptions::racecheck`, `CUDA_EMU_RACECHECK=1`) on planted races
//! (`selftest.cu`): every kind is caught, whichever of the two threads (or blocks) has the
//! higher index and whatever the schedule, with a report naming the kernel, the block(s), both
//! threads, the word and both source lines; warp collectives do not hide a race, a barrier
//! does. That the project's kernels run clean under it is CI's run of the whole parity suite
//! with `CUDA_EMU_RACECHECK=1` (`.ci/run`).

use kernels_emu::{Fault, FaultKind, HazardKind, LaunchOptions, Schedule};

use crate::common::*;
use crate::params;

fn racecheck(schedule: Schedule) -> LaunchOptions {
    LaunchOptions {
        schedules: vec![schedule],
        racecheck: true,
    }
}

const SCHEDULES: [Schedule; 3] = [
    Schedule::Ascending,
    Schedule::Descending,
    Schedule::Random(11),
];

/// `selftest.cu:N` for the line of selftest.cu that carries `marker`.
fn line_of(marker: &str) -> String {
    let source = include_str!("../../selftest.cu");
    let marker = format!("// selftest: {marker}");
    let n = source
        .lines()
        .position(|l| l.contains(&marker))
        .unwrap_or_else(|| panic!("{marker:?} not in selftest.cu"));
    format!("selftest.cu:{}", n + 1)
}

fn contains_all(fault: &Fault, wants: &[String]) {
    for want in wants {
        assert!(
            fault.message.contains(want.as_str()),
            "{want:?} not in:\n{fault}"
        );
    }
}

/// Threads `first` then `second` of warp 0 touch s[5], kept in that order by a warp shuffle or
/// an mma.sync between them (an execution rendezvous that orders no memory).
#[test]
fn every_kind_of_shared_race_is_caught_whichever_thread_is_higher() {
    let mut y = nan_vec(2);
    let kinds = [
        (0, HazardKind::ReadAfterWrite, "first write", "second read"),
        (1, HazardKind::WriteAfterRead, "first read", "second write"),
        (
            2,
            HazardKind::WriteAfterWrite,
            "first write",
            "second write",
        ),
    ];
    for (kind, hazard, first_line, second_line) in kinds {
        for (first, second) in [(3i32, 20i32), (20, 3)] {
            for via in [0i32, 1] {
                for schedule in SCHEDULES {
                    let fault = run_with(
                        "emu_selftest_race",
                        1,
                        64,
                        &racecheck(schedule),
                        &params!(y.as_mut_ptr(), kind, first, second, via),
                    )
                    .expect_err("a race");
                    let what = format!("kind {kind} {first}->{second} via {via} {schedule}");
                    assert_eq!(fault.kind, FaultKind::Trap, "{what}");
                    let h = fault.hazard.unwrap_or_else(|| panic!("{what}: {fault}"));
                    assert_eq!(h.kind, hazard, "{what}: {fault}");
                    assert!(h.shared, "{what}");
                    assert_eq!(fault.thread, [second as u32, 0, 0], "{what}");
                    assert_eq!(h.other_thread, [first as u32, 0, 0], "{what}");
                    assert_eq!((fault.block, h.other_block), ([0; 3], [0; 3]), "{what}");
                    contains_all(
                        &fault,
                        &[
                            "emu_selftest_race".into(),
                            "in block (0,0,0)".into(),
                            "__shared__ s[5] (byte 20 of `s`".into(),
                            format!("by thread ({second},0,0) at {}", line_of(second_line)),
                            format!("by thread ({first},0,0) at {}", line_of(first_line)),
                            "no __syncthreads()".into(),
                        ],
                    );
                }
            }
        }
    }
}

/// The same accesses with `__syncthreads()` between them: ordered, nothing to report.
#[test]
fn a_barrier_between_the_accesses_is_no_race() {
    let mut y = nan_vec(2);
    for kind in 0..3i32 {
        for (first, second) in [(3i32, 20i32), (20, 3), (3, 40), (40, 3)] {
            for schedule in SCHEDULES {
                run_with(
                    "emu_selftest_race",
                    1,
                    64,
                    &racecheck(schedule),
                    &params!(y.as_mut_ptr(), kind, first, second, 2i32),
                )
                .unwrap_or_else(|f| panic!("kind {kind} {first}->{second} {schedule}: {f}"));
            }
        }
    }
}

/// A read of shared memory that no thread of the block has written yet (the missing barrier of
/// emu_selftest_neighbour, under either order of the threads).
#[test]
fn an_uninitialised_shared_read_is_caught() {
    let x: DevVec<f32> = (0..64).map(|i| i as f32).collect();
    let mut y = nan_vec(64);
    for (schedule, reader, word) in [
        (Schedule::Ascending, 0u32, "s[1]"),
        (Schedule::Descending, 63, "s[0]"),
    ] {
        let fault = run_with(
            "emu_selftest_neighbour",
            1,
            64,
            &racecheck(schedule),
            &params!(x.as_ptr(), y.as_mut_ptr(), 0i32),
        )
        .expect_err("a read before any write");
        let h = fault.hazard.expect("a hazard");
        assert_eq!(h.kind, HazardKind::UninitialisedSharedRead, "{fault}");
        assert_eq!(fault.thread, [reader, 0, 0]);
        contains_all(
            &fault,
            &[
                format!("Uninitialised __shared__ read of size 4 bytes: __shared__ {word}"),
                format!("Read by thread ({reader},0,0) at selftest.cu:"),
            ],
        );
        run_with(
            "emu_selftest_neighbour",
            1,
            64,
            &racecheck(schedule),
            &params!(x.as_ptr(), y.as_mut_ptr(), 1i32),
        )
        .expect("with the barrier: clean");
    }
}

/// Every thread adds to one shared counter. The last thread to reach the barrier before it
/// (63) goes on first, so thread 0 reads what thread 63 wrote in the same interval.
#[test]
fn an_unsynchronised_shared_counter_is_caught() {
    let mut y = nan_vec(1);
    let fault = run_with(
        "emu_selftest_shared_counter",
        1,
        64,
        &racecheck(Schedule::Ascending),
        &params!(y.as_mut_ptr()),
    )
    .expect_err("a race");
    let h = fault.hazard.expect("a hazard");
    assert_eq!(h.kind, HazardKind::ReadAfterWrite, "{fault}");
    assert_eq!((fault.thread, h.other_thread), ([0, 0, 0], [63, 0, 0]));
    assert!(
        fault.message.contains("__shared__ count (byte 0"),
        "{fault}"
    );
}

/// Blocks of one launch are never ordered: two blocks writing one device word, or one writing
/// what another reads, are reported whichever block runs (or is numbered) first; the report
/// names both blocks and the allocation.
#[test]
fn blocks_racing_on_a_device_word_are_caught() {
    let mut y = nan_vec(3);
    // (writer block (-1: both), schedule, hazard, the reporting block, the other block)
    let cases = [
        (-1, Schedule::Ascending, HazardKind::WriteAfterWrite, 1, 0),
        (-1, Schedule::Descending, HazardKind::WriteAfterWrite, 0, 1),
        (0, Schedule::Ascending, HazardKind::ReadAfterWrite, 1, 0),
        (0, Schedule::Descending, HazardKind::WriteAfterRead, 0, 1),
        (1, Schedule::Ascending, HazardKind::WriteAfterRead, 1, 0),
        (1, Schedule::Descending, HazardKind::ReadAfterWrite, 0, 1),
    ];
    for (writer, schedule, hazard, now, other) in cases {
        let what = format!("writer {writer} {schedule}");
        let fault = run_with(
            "emu_selftest_block_race",
            2,
            32,
            &racecheck(schedule),
            &params!(y.as_mut_ptr(), writer),
        )
        .expect_err(&what);
        let h = fault.hazard.unwrap_or_else(|| panic!("{what}: {fault}"));
        assert_eq!(h.kind, hazard, "{what}: {fault}");
        assert!(!h.shared);
        assert_eq!(
            (fault.block, h.other_block),
            ([now, 0, 0], [other, 0, 0]),
            "{what}"
        );
        assert_eq!((fault.thread, h.other_thread), ([0; 3], [0; 3]));
        assert_eq!(fault.address, y.addr(), "{what}");
        contains_all(
            &fault,
            &[
                "between blocks of one launch of emu_selftest_block_race".into(),
                format!("(allocation #{} of 12 bytes, byte 0)", y.id()),
                format!("by thread (0,0,0) of block ({now},0,0) at selftest.cu:"),
                format!("by thread (0,0,0) of block ({other},0,0) at selftest.cu:"),
            ],
        );
    }
    // One block alone: its thread 0 is the only one touching y[0].
    for writer in [-1, 0] {
        run_with(
            "emu_selftest_block_race",
            1,
            32,
            &racecheck(Schedule::Ascending),
            &params!(y.as_mut_ptr(), writer),
        )
        .expect("one block: no race");
    }
}
