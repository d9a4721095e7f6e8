//! Depth 110 (and 1202) warm up by the paper's rule unless `--warmup-iters` says otherwise;
//! `--help` and the log say so.

use crate::common::*;

#[test]
fn depth_110_warms_up_at_a_tenth_of_lr_until_the_training_error_is_below_80_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 64, 3, None);
    let csv = tmp.path().join("m.csv");
    // 320 images at batch 32: 10 steps per epoch, so the rule checks at every epoch's end.
    // --milestones 10: no lr drop in these epochs, so after the warm-up lr is 0.1 again.
    let args = [
        "--depth",
        "110",
        "--width",
        "2",
        "--batch-size",
        "32",
        "--milestones",
        "10",
        "--device",
        "cpu",
        "--data-dir",
        p(&data),
        "--metrics",
        p(&csv),
    ];
    let out = ok(&[&args[..], &["--epochs", "4"]].concat());
    assert!(
        out.contains("warm-up: lr 0.01 until the training error is below 80%")
            && out.contains("--warmup-iters N overrides it"),
        "{out}"
    );
    let switch = out
        .lines()
        .find(|l| l.starts_with("warm-up done after iteration"))
        .unwrap_or_else(|| panic!("the warm-up never ended: {out}"));
    assert!(
        switch.contains("< 80%") && switch.ends_with("lr 0.1 from now on"),
        "{switch}"
    );
    let at: usize = switch.split_whitespace().nth(4).unwrap().parse().unwrap();
    let error: f64 = switch
        .split("training error ")
        .nth(1)
        .unwrap()
        .split('%')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(error < 80.0 && at.is_multiple_of(10) && at < 40, "{switch}");
    // The epochs up to the switch ran at 0.01 (the CSV's lr is each epoch's last), those after at 0.1.
    let text = std::fs::read_to_string(&csv).unwrap();
    for row in text.lines().skip(1) {
        let f: Vec<f64> = row.split(',').map(|x| x.parse().unwrap()).collect();
        let (epoch, lr) = (f[0] as usize, f[1]);
        let want = if epoch * 10 <= at { 0.01 } else { 0.1 };
        assert!(
            (lr - want).abs() < 1e-6,
            "epoch {epoch}: lr {lr}, switch at {at}: {text}"
        );
    }

    // --warmup-iters overrides the rule: 0 turns it off, N is a fixed warm-up.
    let out = ok(&[&args[..], &["--warmup-iters", "0", "--epochs", "1"]].concat());
    assert!(!out.contains("warm-up"), "{out}");
    assert!(out.contains("epoch   1/1  lr 0.1000"), "{out}");
    let out = ok(&[&args[..], &["--warmup-iters", "15", "--epochs", "2"]].concat());
    assert!(
        out.contains("warm-up: lr 0.01 for the first 15 iterations"),
        "{out}"
    );
    assert!(!out.contains("warm-up done"), "{out}");
    // Other depths have none by default.
    let out = ok(&small(&["--data-dir", p(&data), "--epochs", "1"]));
    assert!(!out.contains("warm-up"), "{out}");
}

#[test]
fn help_documents_the_warm_up_rule() {
    let help = ok(&["--help"]);
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("--warmup-iters <N>")
            && flat.contains(
                "depth 110 and 1202: the paper's rule, lr/10 until the training error is below 80%"
            ),
        "{help}"
    );
}
