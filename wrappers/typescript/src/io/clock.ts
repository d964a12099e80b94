// Timestamps: wall-clock milliseconds that never decrease (TIME-1), even when
// the system clock steps back.

export class Clock {
  private last = 0;

  constructor(private readonly now: () => number = Date.now) {}

  stamp(): number {
    const ms = Math.floor(this.now());
    if (ms > this.last) this.last = ms;
    return this.last;
  }
}
