// The live loss chart (uPlot, vendored): loss per step and its moving average.

const MAX_POINTS = 5000; // points kept
const HEIGHT = 280;
const SMOOTHING = 0.1; // weight of the newest loss in the moving average

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

const formatLoss = (_, v) => (v == null ? "–" : v.toFixed(4));
// Steps are whole numbers: ticks 1, 2, 5, 10, 20, 50... apart, never 0.5.
const STEP_INCREMENTS = Array.from({ length: 30 }, (_, i) => [1, 2, 5][i % 3] * 10 ** Math.floor(i / 3));
const formatSteps = (_, splits) => splits.map((v) => (Number.isInteger(v) ? v.toLocaleString("en-US") : ""));

export class LossChart {
  // The point count is kept on the element as data-points.
  constructor(element) {
    this.element = element;
    this.steps = [];
    this.losses = [];
    this.plot = null;
    this.drawQueued = false;
    this.build();
    new ResizeObserver(() => this.resize()).observe(element);
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.build());
  }

  width() {
    return Math.max(this.element.clientWidth, 240);
  }

  // (Re)draw from scratch, in the colours of the current theme.
  build() {
    const axis = {
      stroke: cssColor("--muted"),
      grid: { stroke: cssColor("--grid"), width: 1 },
      ticks: { stroke: cssColor("--grid"), width: 1 },
    };
    const line = { stroke: cssColor("--accent"), points: { show: false }, value: formatLoss };
    const options = {
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: false } },
      series: [
        { label: "step", value: (_, v) => (v == null ? "–" : Math.round(v).toLocaleString("en-US")) },
        { ...line, label: "loss", width: 2, alpha: 0.35 },
        { ...line, label: "moving average", width: 2.5 },
      ],
      axes: [
        { ...axis, label: "step", incrs: STEP_INCREMENTS, values: formatSteps },
        { ...axis, label: "loss" },
      ],
    };
    if (this.plot) this.plot.destroy();
    this.plot = new uPlot(options, this.data(), this.element);
  }

  resize() {
    const width = this.width();
    if (this.plot && this.plot.width !== width) this.plot.setSize({ width, height: HEIGHT });
  }

  data() {
    let mean = null;
    const smooth = this.losses.map((y) => {
      mean = mean === null ? y : mean + SMOOTHING * (y - mean);
      return mean;
    });
    return [this.steps, this.losses, smooth];
  }

  add(step, loss) {
    const { steps, losses } = this;
    if (steps.length && step <= steps[steps.length - 1]) {
      // The server went back to an older checkpoint: its later history is gone.
      const keep = steps.findIndex((x) => x >= step);
      steps.length = keep;
      losses.length = keep;
    }
    steps.push(step);
    losses.push(loss);
    if (steps.length > MAX_POINTS) {
      steps.splice(0, steps.length - MAX_POINTS);
      losses.splice(0, losses.length - MAX_POINTS);
    }
    this.element.dataset.points = String(steps.length);
    if (!this.drawQueued) {
      this.drawQueued = true; // one redraw per frame, however many events came
      requestAnimationFrame(() => {
        this.drawQueued = false;
        this.plot.setData(this.data());
      });
    }
  }
}
