# Draws the latency distributions of part 1 (mae_bench writes the data):
# one curve per Redis state, ours solid, the replaced design dashed, on a
# log latency axis against a "nines" axis so the tail is as visible as the
# median. Called as: gnuplot -e "datafile='...'; outfile='...'" plot.gp
if (!exists("datafile")) datafile = 'bench/results/latency-cdf.tmp'
if (!exists("outfile")) outfile = 'bench/results/latency.png'

set terminal pngcairo size 1100,680 font "sans,10" noenhanced
set output outfile
set title "mae_safe_publish call latency on the caller's thread, by Redis state\nours (solid) vs the replaced design: synchronous hiredis PUBLISH, 2 s timeouts (dashed)"
set logscale x
set xrange [10:1e10]
set xtics ("10 ns" 10, "100 ns" 100, "1 µs" 1e3, "10 µs" 1e4, "100 µs" 1e5, "1 ms" 1e6, "10 ms" 1e7, "100 ms" 1e8, "1 s" 1e9, "10 s" 1e10)
set xlabel "call latency (log scale)"
set ylabel "fraction of calls at or below"
set ytics ("0" 0, "50 %%" 0.30103, "90 %%" 1, "99 %%" 2, "99.9 %%" 3, "99.99 %%" 4, "99.999 %%" 5)
set yrange [0:6.5]
set grid xtics ytics
set key outside right center box
set arrow from 1e3, graph 0 to 1e3, graph 1 nohead dt 3 lc rgb "#808080"
set arrow from 5e3, graph 0 to 5e3, graph 1 nohead dt 3 lc rgb "#808080"
set label "p50 target" at 1e3, 6.35 right offset -0.5,0 font ",8" tc rgb "#606060"
set label "p99 target" at 5e3, 6.35 left offset 0.5,0 font ",8" tc rgb "#606060"

# The data has 8 blocks: for each state (healthy, slow, hung, refused) ours
# then replaced. Column 3 is -log10(1 - fraction); each curve ends at its max.
y(c) = (c > 6 ? 6 : c)
plot \
  datafile index 0 using 1:(y($3)) with lines lw 2 lc rgb "#1b9e77" dt 1 title "healthy, ours", \
  datafile index 1 using 1:(y($3)) with lines lw 2 lc rgb "#1b9e77" dt 2 title "healthy, replaced", \
  datafile index 2 using 1:(y($3)) with lines lw 2 lc rgb "#d95f02" dt 1 title "slow, ours", \
  datafile index 3 using 1:(y($3)) with lines lw 2 lc rgb "#d95f02" dt 2 title "slow, replaced", \
  datafile index 4 using 1:(y($3)) with lines lw 2 lc rgb "#7570b3" dt 1 title "hung, ours", \
  datafile index 5 using 1:(y($3)) with linespoints lw 2 pt 7 ps 0.8 lc rgb "#7570b3" dt 2 title "hung, replaced", \
  datafile index 6 using 1:(y($3)) with lines lw 2 lc rgb "#e7298a" dt 1 title "refused, ours", \
  datafile index 7 using 1:(y($3)) with lines lw 2 lc rgb "#e7298a" dt 2 title "refused, replaced"
