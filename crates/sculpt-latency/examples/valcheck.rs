//! Per-step diagnosis of `latency validate`'s plans: `-- LUT MODEL_DIR 7,67,70` prints the
//! steps of those plans (validation seed 0), timed in the graph and looked up (scaled).
use rand::SeedableRng;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lut = sculpt_latency::Lut::load(std::path::Path::new(&args[1])).unwrap();
    let teacher = sculpt_nn::io::load(std::path::Path::new(&args[2])).unwrap();
    let wanted: Vec<usize> = args[3].split(',').map(|s| s.parse().unwrap()).collect();
    println!("scales {:?} overhead {}", lut.scales, lut.overhead_ms);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0u64.wrapping_add(0x5EED_0000));
    for i in 0..=*wanted.iter().max().unwrap() {
        let plan = sculpt_latency::lut::random_plan(&teacher, &mut rng);
        if !wanted.contains(&i) {
            continue;
        }
        let graph = sculpt_compress::compress(&teacher, &plan, None).unwrap();
        let mut rt = sculpt_runtime::Runtime::compile(
            &graph,
            &sculpt_runtime::Options {
                max_batch: lut.batch,
                threads: 1,
                isa: None,
                sparse: Default::default(),
            },
        )
        .unwrap();
        let times = rt.step_times(lut.batch, 2000).unwrap();
        let m = sculpt_runtime::measure(&mut rt, lut.batch, 100, 2000)
            .unwrap()
            .median_ms;
        let (mut st, mut sl) = (0.0, 0.0);
        println!("plan {i}: whole {m:.5}");
        for (s, (_, ms)) in rt.step_shapes().iter().zip(&times) {
            let l = lut.step_ms(s).unwrap();
            st += ms;
            sl += l;
            println!(
                "   {:<14} {:<5} p{:<5} n{:<4} k{:<5} g{:<3} meas {:.5} lut {:.5} ratio {:.2}",
                s.kind,
                s.precision,
                s.positions,
                s.n,
                s.k,
                s.groups,
                ms,
                l,
                ms / l
            );
        }
        println!("   steps {st:.5} lut(unscaled) {sl:.5} predict {:.5}", {
            use sculpt_latency::LatencyModel;
            lut.predict_ms(&graph).unwrap()
        });
    }
}
