//! Prints where a model's plan spends its time: `cargo run --release -p sculpt-runtime
//! --example steps -- MODEL_DIR [BATCH] [THREADS]`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let batch: usize = args.get(2).map_or(1, |b| b.parse().unwrap());
    let threads: usize = args.get(3).map_or(1, |b| b.parse().unwrap());
    let graph = sculpt_nn::io::load(dir).unwrap();
    let mut rt = sculpt_runtime::Runtime::compile(
        &graph,
        &sculpt_runtime::Options {
            max_batch: batch,
            threads,
            isa: None,
            sparse: Default::default(),
        },
    )
    .unwrap();
    let times = rt.step_times(batch, 500).unwrap();
    let total: f64 = times.iter().map(|t| t.1).sum();
    for (kind, ms) in &times {
        println!("{kind:<16} {:>9.4} ms {:>5.1}%", ms, ms / total * 100.0);
    }
    println!("{:<16} {total:>9.4} ms", "sum");
}
