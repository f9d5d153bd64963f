# plot.gp - throughput against the budget, upager and the kernel's paging.
#
#   gnuplot -e "datafile='bench/sweep.tsv'; outfile='bench/throughput.png'" bench/plot.gp
#
# datafile is the sweep written by upager_bench (--sweep-out); optional:
# pread_mibps, a reference line (raw pread of the same bytes, page cache
# hot), and data_mib, the data size for the title.  bench/run passes all.
#
# Copyright (C) 2026 the upager authors.
# SPDX-License-Identifier: GPL-2.0-or-later

if (!exists("datafile")) datafile = 'bench/sweep.tsv'
if (!exists("outfile")) outfile = 'bench/throughput.png'
if (!exists("pread_mibps")) pread_mibps = ''
if (!exists("data_mib")) data_mib = ''

set terminal pngcairo size 1400,560 font "sans,11" noenhanced
set output outfile
set datafile separator "\t"
set datafile commentschars "#"

# columns: 1 frac, 2 budget, 3 system, 4 seq MiB/s, 5 min, 6 max,
#          7 random M reads/s, 8 min, 9 max
is(s) = strcol(3) eq s

set multiplot layout 1,2 title (data_mib ne '' ? \
    sprintf("upager against the kernel's paging (mmap MAP_SHARED of a file, memory cgroup at the budget), data %s MiB", data_mib) : \
    "upager against the kernel's paging (mmap MAP_SHARED of a file, memory cgroup at the budget)")

set logscale x 2
set logscale y 10
set xrange [0.09:2]
set xtics ("1/8" 0.125, "1/4" 0.25, "1/2" 0.5, "1" 1, "1.5" 1.5)
set xlabel "budget / data"
set grid xtics ytics mytics
set key top left box opaque
set format y "%g"

set title "sequential read (8-byte words, checked)"
set ylabel "MiB/s"
if (pread_mibps ne '') {
    set arrow 1 from graph 0, first real(pread_mibps) to graph 1, first real(pread_mibps) nohead dashtype 2 lc rgb "gray40"
    set label 1 sprintf("raw pread, page cache hot: %.0f MiB/s", real(pread_mibps)) at graph 0.02, first real(pread_mibps) offset 0,0.7 tc rgb "gray30"
}
plot datafile using 1:(is("upager") ? $4 : 1/0):5:6 with yerrorlines lw 2 pt 7 lc rgb "#1f77b4" title "upager", \
     datafile using 1:(is("kmmap") ? $4 : 1/0):5:6 with yerrorlines lw 2 pt 5 lc rgb "#d62728" title "kernel mmap"

unset arrow 1
unset label 1
set title "uniform random 8-byte reads"
set ylabel "million reads/s"
plot datafile using 1:(is("upager") ? $7 : 1/0):8:9 with yerrorlines lw 2 pt 7 lc rgb "#1f77b4" title "upager", \
     datafile using 1:(is("kmmap") ? $7 : 1/0):8:9 with yerrorlines lw 2 pt 5 lc rgb "#d62728" title "kernel mmap"

unset multiplot
