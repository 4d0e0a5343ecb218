"""Side-by-side benchmarks (`make bench`). Each module has `main(results_dir)`; results go to benchmarks/results/."""
