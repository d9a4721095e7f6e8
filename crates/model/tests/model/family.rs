//! The ResNet family: exact parameter counts (../shared/REFERENCE.md), block counts, names,
//! shapes and the error for unsupported depths.

use model::{ConfigError, Mode, ResNet, ResNetConfig, ShortcutKind};
use tensor::Tensor;

fn params(
    depth: usize,
    width: Option<usize>,
    shortcut: Option<ShortcutKind>,
    classes: usize,
) -> usize {
    ResNet::new(
        &ResNetConfig::from_depth(depth, width, shortcut, classes).unwrap(),
        0,
    )
    .num_params()
}

/// depth, width, shortcut, classes, parameters (REFERENCE.md's table).
type Row = (usize, Option<usize>, Option<ShortcutKind>, usize, usize);

#[test]
fn parameter_counts_match_the_reference_table() {
    use ShortcutKind::{Conv, Pad};
    let table: [Row; 15] = [
        (20, None, None, 10, 269_722),
        (32, None, None, 10, 464_154),
        (44, None, None, 10, 658_586),
        (56, None, None, 10, 853_018),
        (110, None, None, 10, 1_727_962),
        (1202, None, None, 10, 19_421_274),
        (20, None, None, 100, 275_572),
        (18, Some(64), Some(Pad), 10, 11_000_138),
        (18, Some(64), Some(Conv), 10, 11_173_962),
        (34, Some(64), Some(Conv), 10, 21_282_122),
        (34, Some(64), Some(Pad), 10, 21_108_298),
        (34, Some(16), Some(Pad), 10, 1_323_418),
        (50, Some(64), Some(Conv), 10, 23_520_842),
        (101, Some(64), Some(Conv), 10, 42_512_970),
        (152, Some(64), Some(Conv), 10, 58_156_618),
    ];
    for (depth, width, shortcut, classes, want) in table {
        assert_eq!(
            params(depth, width, shortcut, classes),
            want,
            "depth {depth} width {width:?} {shortcut:?} {classes} classes"
        );
    }
}

#[test]
fn defaults_follow_the_design_card() {
    let c = ResNetConfig::from_depth(34, None, None, 10).unwrap();
    assert_eq!(
        (c.blocks.clone(), c.widths.clone(), c.shortcut),
        (vec![3, 4, 6, 3], vec![64, 128, 256, 512], ShortcutKind::Pad)
    );
    let c = ResNetConfig::from_depth(50, None, None, 100).unwrap();
    assert_eq!((c.shortcut, c.num_classes), (ShortcutKind::Conv, 100));
    let c = ResNetConfig::from_depth(110, None, None, 10).unwrap();
    assert_eq!(
        (c.blocks.clone(), c.widths.clone()),
        (vec![18, 18, 18], vec![16, 32, 64])
    );
    assert_eq!(c.name(), "resnet110");
    assert_eq!(
        ResNetConfig::from_depth(34, Some(16), None, 10)
            .unwrap()
            .name(),
        "resnet34-w16"
    );
}

#[test]
fn make_layer_builds_exactly_the_listed_blocks() {
    // The seed's _make_layer builds one block too many; depth 34 must have 3+4+6+3 = 16.
    let mut m = ResNet::new(
        &ResNetConfig::from_depth(34, Some(16), None, 10).unwrap(),
        0,
    );
    assert_eq!(m.blocks.len(), 16);
    let strides: Vec<usize> = m.blocks.iter().map(|b| b.stride).collect();
    assert_eq!(strides, [1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1]);
    // The last stage sees 4x4 maps; global pooling handles them (the seed's AvgPool2d(8) did not).
    let rows = m.summary();
    assert_eq!(rows[16].out_shape, vec![128, 4, 4]);
    let x = Tensor::full(&[2, 3, 32, 32], 0.5);
    assert_eq!(m.forward(&x, Mode::Eval).shape(), &[2, 10]);
}

#[test]
fn unsupported_depth_lists_the_valid_ones() {
    let err = ResNetConfig::from_depth(21, None, None, 10).unwrap_err();
    assert_eq!(err, ConfigError::Depth(21));
    let msg = err.to_string();
    for d in [
        "20", "32", "44", "56", "110", "1202", "18", "34", "50", "101", "152",
    ] {
        assert!(msg.contains(d), "{msg}");
    }
}

#[test]
fn summary_ends_with_the_parameter_count_and_names_mirror_pytorch() {
    let mut m = ResNet::new(&ResNetConfig::from_depth(20, None, None, 10).unwrap(), 0);
    let text = m.summary_text();
    assert!(text.trim_end().ends_with("parameters: 269722"), "{text}");
    let names: Vec<String> = m.params_mut().iter().map(|p| p.name.clone()).collect();
    for n in [
        "stem.0.weight",
        "stem.1.weight",
        "stem.1.bias",
        "layers.0.c1.weight",
        "layers.8.b2.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.iter().any(|x| x == n), "missing {n}");
    }
    let mut b = ResNet::new(&ResNetConfig::from_depth(50, None, None, 10).unwrap(), 0);
    let names: Vec<String> = b.params_mut().iter().map(|p| p.name.clone()).collect();
    assert!(
        names.iter().any(|x| x == "layers.0.sc.0.weight")
            && names.iter().any(|x| x == "layers.0.c3.weight")
    );
}

#[test]
fn same_seed_same_weights() {
    let c = ResNetConfig::from_depth(20, None, None, 10).unwrap();
    let (mut a, mut b, mut d) = (ResNet::new(&c, 7), ResNet::new(&c, 7), ResNet::new(&c, 8));
    let va: Vec<Tensor> = a.params_mut().iter().map(|p| p.value.clone()).collect();
    let vb: Vec<Tensor> = b.params_mut().iter().map(|p| p.value.clone()).collect();
    let vd: Vec<Tensor> = d.params_mut().iter().map(|p| p.value.clone()).collect();
    assert_eq!(va, vb);
    assert_ne!(va, vd);
    // Kaiming fan_out: the std of layers.8.c2 (64 out, 3x3) is sqrt(2/576) ≈ 0.0589.
    let w = &a
        .params_mut()
        .into_iter()
        .find(|p| p.name == "layers.8.c2.weight")
        .unwrap()
        .value;
    let std = (w.sum_sq() / w.len() as f64).sqrt();
    assert!((std - (2.0f64 / 576.0).sqrt()).abs() < 0.003, "std {std}");
}
