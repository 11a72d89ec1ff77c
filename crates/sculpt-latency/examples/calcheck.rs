//! Diagnoses a lookup table against whole graphs: the calibration plans of the four zoo
//! networks, measured and summed from the table, with their per-group sums.
//! `cargo run --release -p sculpt-latency --example calcheck -- LUT` prints every plan;
//! `STEPS=resnet-8:3` also prints that plan's steps, measured and looked up;
//! `-- LUT conv3,8,1024,16,108` times one probe (kind, bits, positions, n, k) instead;
//! `-- LUT validate MODEL_DIR 7,67,70` prints the steps of those plans of
//! `latency validate` (seed 0), timed in the graph and looked up, with the whole graph.
use rand::SeedableRng;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lut = sculpt_latency::Lut::load(std::path::Path::new(&args[1])).unwrap();
    if args.get(2).map(String::as_str) == Some("validate") {
        validation_plans(&lut, &args[3], &args[4]);
        return;
    }
    if args.get(2).map(String::as_str) == Some("resnet3") {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xCA11B);
        let teacher = sculpt_nn::zoo::build("resnet-8", &[3, 32, 32], 10, 1).unwrap();
        let mut graph = teacher.clone();
        for _ in 0..3 {
            graph = sculpt_compress::compress(
                &teacher,
                &sculpt_latency::lut::random_plan(&teacher, &mut rng),
                None,
            )
            .unwrap();
        }
        let m = sculpt_latency::measure(
            &graph,
            &sculpt_latency::MeasureSettings {
                batch: 1,
                threads: 1,
                warmup: 10,
                runs: 20000,
            },
        )
        .unwrap()
        .median_ms;
        println!("{m}");
        return;
    }
    if let Some(spec) = args.get(2) {
        let v: Vec<&str> = spec.split(',').collect();
        probe_steps(
            &lut,
            v[0],
            v[1].parse().unwrap(),
            v[2].parse().unwrap(),
            v[3].parse().unwrap(),
            v[4].parse().unwrap(),
        );
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xCA11B);
    for (model, shape) in [
        ("lenet-300-100", &[784usize][..]),
        ("lenet-5", &[1, 28, 28]),
        ("resnet-8", &[3, 32, 32]),
        ("mobilenet-s", &[3, 32, 32]),
    ] {
        let teacher = sculpt_nn::zoo::build(model, shape, 10, 1).unwrap();
        for i in 0..12 {
            let graph = if i == 0 {
                teacher.clone()
            } else {
                sculpt_compress::compress(
                    &teacher,
                    &sculpt_latency::lut::random_plan(&teacher, &mut rng),
                    None,
                )
                .unwrap()
            };
            let r0 = sculpt_latency::reference_ms(1, 1).unwrap();
            let m = sculpt_latency::measure(
                &graph,
                &sculpt_latency::MeasureSettings {
                    batch: 1,
                    threads: 1,
                    warmup: 10,
                    runs: 200,
                },
            )
            .unwrap()
            .median_ms;
            let r1 = sculpt_latency::reference_ms(1, 1).unwrap();
            let g = lut.group_ms(&graph).unwrap();
            let s: f64 = g.iter().sum();
            if std::env::var("STEPS").ok().as_deref() == Some(&format!("{model}:{i}")) {
                print_steps(&lut, &graph, "");
            }
            println!(
                "{model:<14} {i:>2} meas {m:.5} ref {:.5} sum {s:.5} ratio {:.3} groups {:?}",
                0.5 * (r0 + r1),
                m / s,
                g.map(|x| (x * 1e5).round() / 1e5)
            );
        }
    }
}
fn probe_steps(lut: &sculpt_latency::Lut, kind: &str, bits: u32, p: usize, n: usize, k: usize) {
    let graph = sculpt_latency::lut::probe(kind, bits, p, n, k).unwrap();
    print_steps(lut, &graph, "probe ");
}

/// The steps of `latency validate`'s plans `wanted` (seed 0) of the model in `dir`.
fn validation_plans(lut: &sculpt_latency::Lut, dir: &str, wanted: &str) {
    use sculpt_latency::LatencyModel;
    let teacher = sculpt_nn::io::load(std::path::Path::new(dir)).unwrap();
    let wanted: Vec<usize> = wanted.split(',').map(|s| s.parse().unwrap()).collect();
    println!("scales {:?} overhead {}", lut.scales, lut.overhead_ms);
    // `latency validate`'s plan seed for --seed 0.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED_0000);
    for i in 0..=*wanted.iter().max().unwrap() {
        let plan = sculpt_latency::lut::random_plan(&teacher, &mut rng);
        if !wanted.contains(&i) {
            continue;
        }
        let graph = sculpt_compress::compress(&teacher, &plan, None).unwrap();
        let m = sculpt_latency::measure(
            &graph,
            &sculpt_latency::MeasureSettings {
                batch: lut.batch,
                threads: 1,
                warmup: 100,
                runs: 2000,
            },
        )
        .unwrap()
        .median_ms;
        println!("plan {i}: whole {m:.5}");
        let (steps, looked_up) = print_steps(lut, &graph, "");
        println!(
            "   steps {steps:.5} lut (unscaled) {looked_up:.5} predict {:.5}",
            lut.predict_ms(&graph).unwrap()
        );
    }
}

/// Each step of `graph` at the table's batch: measured in the graph and looked up, and
/// their sums.
fn print_steps(lut: &sculpt_latency::Lut, graph: &sculpt_nn::Graph, prefix: &str) -> (f64, f64) {
    let mut rt = sculpt_runtime::Runtime::compile(
        graph,
        &sculpt_runtime::Options {
            max_batch: lut.batch,
            threads: 1,
            isa: None,
            sparse: Default::default(),
        },
    )
    .unwrap();
    let times = rt.step_times(lut.batch, 300).unwrap();
    let mut sums = (0.0, 0.0);
    for (s, (_, ms)) in rt.step_shapes().iter().zip(&times) {
        let looked_up = lut.step_ms(s).unwrap();
        sums = (sums.0 + ms, sums.1 + looked_up);
        println!(
            "   {prefix}{:<14} {:<5} p{:<5} n{:<4} k{:<5} g{:<3} meas {:.5} lut {:.5} ratio {:.2}",
            s.kind,
            s.precision,
            s.positions,
            s.n,
            s.k,
            s.groups,
            ms,
            looked_up,
            ms / looked_up
        );
    }
    sums
}
