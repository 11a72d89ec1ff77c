//! Compares a lookup table's entries with a model's measured steps:
//! `cargo run --release -p sculpt-latency --example lutcheck -- LUT MODEL_DIR`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lut = sculpt_latency::Lut::load(std::path::Path::new(&args[1])).unwrap();
    let graph = match args[2].strip_prefix("zoo:") {
        Some("resnet-8") => sculpt_nn::zoo::build("resnet-8", &[3, 32, 32], 10, 1).unwrap(),
        Some("mobilenet-s") => sculpt_nn::zoo::build("mobilenet-s", &[3, 32, 32], 10, 1).unwrap(),
        _ => sculpt_nn::io::load(std::path::Path::new(&args[2])).unwrap(),
    };
    println!("scales {:?} overhead {}", lut.scales, lut.overhead_ms);
    let mut rt = sculpt_runtime::Runtime::compile(
        &graph,
        &sculpt_runtime::Options {
            max_batch: lut.batch,
            threads: lut.threads,
            isa: None,
            sparse: Default::default(),
        },
    )
    .unwrap();
    let times = rt.step_times(lut.batch, 300).unwrap();
    for (s, (_, ms)) in rt.step_shapes().iter().zip(&times) {
        let p = lut.step_ms(s).unwrap();
        println!(
            "{:<16} {:<5} p{:<6} n{:<5} k{:<5} g{:<3} measured {:.5} lut {:.5}",
            s.kind, s.precision, s.positions, s.n, s.k, s.groups, ms, p
        );
    }
    let m = sculpt_runtime::measure(&mut rt, lut.batch, 50, 500).unwrap();
    println!(
        "whole: measured {:.5}, steps {:.5}, lut {:.5}",
        m.median_ms,
        times.iter().map(|t| t.1).sum::<f64>(),
        lut.steps_ms(&graph).unwrap() + lut.overhead_ms
    );
}
