# plot.gp: placeholder until the benchmark plot lands.
