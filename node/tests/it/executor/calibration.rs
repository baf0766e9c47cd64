//! Calibration: the capacity measured follows the executor's cpu share.

use std::time::Duration;

use agora_node::executor::{Config, Executor, calibrate};

use super::{executor, heavy};

#[test]
fn a_quarter_cpu_share_measures_about_a_quarter_of_the_capacity() {
    let _heavy = heavy();
    let full = executor();
    let quarter = Executor::new(Config {
        cpu_share: 0.25,
        ..Config::default()
    })
    .unwrap();
    let budget = Duration::from_millis(400);
    let a = calibrate(&full, budget).unwrap();
    let b = calibrate(&quarter, budget).unwrap();
    assert!(a.cu.0 > 0 && a.fuel.0 > 0);
    // The fastest of the rounds counts; each lasts a share of the budget.
    let round = budget / agora_node::executor::CALIBRATION_ROUNDS;
    assert!(
        a.elapsed >= round && a.elapsed < round + Duration::from_millis(300),
        "{a:?}"
    );
    let ratio = b.cu.0 as f64 / a.cu.0 as f64;
    assert!(
        (0.12..=0.45).contains(&ratio),
        "full {a:?}, quarter {b:?}, ratio {ratio:.2}"
    );
    // The share can be changed on a live executor.
    quarter.set_cpu_share(1.0);
    assert_eq!(quarter.cpu_share(), 1.0);
}
