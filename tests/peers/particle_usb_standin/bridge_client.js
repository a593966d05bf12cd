'use strict';
// The node side of the pipe to tests/interop/particle_usb_bridge.py, and node's clock.
//
// Every USB operation is one JSON line written to the bridge and one JSON line read back, synchronously
// (fs.writeSync / fs.readSync on the two pipe descriptors the bridge passed: PUSB_BRIDGE_RFD, PUSB_BRIDGE_WFD).
// Every reply carries the simulated bench's device time (`now`, milliseconds), so node's clock is the device's:
// setTimeout, clearTimeout, setInterval, clearInterval and Date.now are replaced by timers on that clock. When node
// has nothing left to do but wait for a timer, it asks the bridge to let device time run to the timer's deadline
// ({op: "sleep_until"}), so a 500 ms poll costs 500 ms of device time and no real time, as pyusb's own waits do on
// the simulator's clock. USB completions (callbacks of the stand-in `usb` package) are queued here too and run
// before any time passes.
const fs = require('fs');

const RFD = Number(process.env.PUSB_BRIDGE_RFD);
const WFD = Number(process.env.PUSB_BRIDGE_WFD);
if (!Number.isInteger(RFD) || !Number.isInteger(WFD)) {
	throw new Error('PUSB_BRIDGE_RFD/PUSB_BRIDGE_WFD are not set: run this through tests/interop/particle_usb_bridge.py');
}

const EPOCH_MS = Date.UTC(2026, 0, 1); // Date.now() = this + device time
let nowMs = 0; // device time in milliseconds, as the bridge last said
let inbox = Buffer.alloc(0);
const chunk = Buffer.alloc(1 << 16);

function readLine() {
	for (;;) {
		const nl = inbox.indexOf(10);
		if (nl >= 0) {
			const line = inbox.subarray(0, nl).toString('utf8');
			inbox = inbox.subarray(nl + 1);
			return line;
		}
		let n;
		try {
			n = fs.readSync(RFD, chunk, 0, chunk.length, null);
		} catch (err) {
			if (err.code === 'EAGAIN') {
				continue; // a non-blocking descriptor: the bridge has not answered yet
			}
			throw err;
		}
		if (n === 0) {
			throw new Error('the bridge closed the pipe');
		}
		inbox = Buffer.concat([inbox, chunk.subarray(0, n)]);
	}
}

function writeAll(text) {
	const buf = Buffer.from(text, 'utf8');
	let off = 0;
	while (off < buf.length) {
		try {
			off += fs.writeSync(WFD, buf, off, buf.length - off);
		} catch (err) {
			if (err.code !== 'EAGAIN') {
				throw err;
			}
		}
	}
}

/** One request to the bridge, answered synchronously. */
function call(msg) {
	writeAll(JSON.stringify(msg) + '\n');
	const reply = JSON.parse(readLine());
	if (typeof reply.now === 'number') {
		nowMs = reply.now;
	}
	if (reply.fatal) {
		throw new Error(`bridge: ${reply.fatal}`);
	}
	return reply;
}

// --- node's clock: timers on device time ---------------------------------------------------------------------------

const realSetImmediate = global.setImmediate;
const timers = []; // {when, seq, fn, args, cancelled, refed, repeat}
let seq = 0;
const ready = []; // USB completions to deliver, oldest first
let pumpScheduled = false;

class VirtualTimeout {
	constructor(fn, ms, args, repeat) {
		this._fn = fn;
		this._args = args;
		this._ms = Math.max(1, Number(ms) || 0); // as node does: 0, negative or NaN becomes 1 ms
		this._repeat = repeat;
		this._refed = true;
		this._arm();
	}

	_arm() {
		this.cancelled = false;
		this.when = nowMs + this._ms;
		this.seq = ++seq;
		timers.push(this);
		schedulePump();
	}

	ref() {
		this._refed = true;
		return this;
	}

	unref() {
		this._refed = false;
		return this;
	}

	hasRef() {
		return this._refed;
	}

	refresh() {
		this._cancel();
		this._arm();
		return this;
	}

	close() {
		this._cancel();
		return this;
	}

	_cancel() {
		this.cancelled = true;
		const i = timers.indexOf(this);
		if (i >= 0) {
			timers.splice(i, 1);
		}
	}

	[Symbol.toPrimitive]() {
		return this.seq;
	}
}

function nextTimer() {
	let best = null;
	for (const t of timers) {
		if (!best || t.when < best.when || (t.when === best.when && t.seq < best.seq)) {
			best = t;
		}
	}
	return best;
}

function schedulePump() {
	if (!pumpScheduled) {
		pumpScheduled = true;
		realSetImmediate(pump);
	}
}

// One step per real setImmediate, so promise continuations (microtasks) run between steps: a USB completion first,
// then a due timer; time moves only when neither is left.
function pump() {
	pumpScheduled = false;
	if (ready.length) {
		const fn = ready.shift();
		schedulePump();
		fn();
		return;
	}
	const t = nextTimer();
	if (!t || !timers.some(x => x._refed)) {
		return; // nothing to wait for: node may exit
	}
	if (t.when > nowMs) {
		call({ op: 'sleep_until', t: t.when });
	}
	t._cancel();
	if (t._repeat) {
		t._arm();
	}
	schedulePump();
	t._fn(...t._args);
}

function install() {
	global.setTimeout = (fn, ms, ...args) => new VirtualTimeout(fn, ms, args, false);
	global.setInterval = (fn, ms, ...args) => new VirtualTimeout(fn, ms, args, true);
	const clear = (t) => {
		if (t instanceof VirtualTimeout) {
			t._cancel();
		}
	};
	global.clearTimeout = clear;
	global.clearInterval = clear;
	Date.now = () => EPOCH_MS + Math.floor(nowMs);
}

/** Deliver a USB completion later (node-usb calls back from its completion queue, never inside the call). */
function defer(fn) {
	ready.push(fn);
	schedulePump();
}

/** Device time in milliseconds. */
function now() {
	return nowMs;
}

/** A promise that resolves after `ms` of device time. */
function sleep(ms) {
	return new Promise(resolve => global.setTimeout(resolve, ms));
}

module.exports = { call, defer, install, now, sleep };
