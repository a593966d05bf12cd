'use strict';
// Drives one simulated Particle device through particle-usb's public API, step by step, as the plan says.
//
//   node driver.js PLAN.json      (run by tests/interop/particle_usb_bridge.py, which serves the USB side)
//
// PLAN.json: {"device_id": "...", "steps": ["list", "open", ...], "args": {"<step>": {...}}}. Each step is marked
// on the bridge ({op: "mark"}) so the bridge files the transfers under it, then reported ({op: "result"}) with what
// particle-usb returned or threw. A step that throws does not end the run: the next step starts from whatever state
// the device is in (reopening it where it needs an open device).
//
// particle-usb is loaded from PUSB_PARTICLE_USB (tests/peers/node_modules/particle-usb); its `require('usb')`
// resolves to this directory's stand-in (index.js), never to the real node-usb. node's timers run on the simulated
// bench's clock (bridge_client.js).
const fs = require('fs');
const path = require('path');
const Module = require('module');
const bridge = require('./bridge_client');

bridge.install();

const STANDIN = path.join(__dirname, 'index.js');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, parent, ...rest) {
	if (request === 'usb') {
		return STANDIN;
	}
	return resolve.call(this, request, parent, ...rest);
};

const PUSB_DIR = process.env.PUSB_PARTICLE_USB || path.join(__dirname, '..', 'node_modules', 'particle-usb');
const pusb = require(PUSB_DIR);
if (process.env.PUSB_TRACE) {
	const log = (level) => (...args) => process.stderr.write(`[${bridge.now().toFixed(1)} ms ${level}] ${args.join(' ')}\n`);
	pusb.config({ log: { trace: log('trace'), info: log('info'), warn: log('warn'), error: log('error') } });
}

const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const ID = plan.device_id;
const REOPEN_DELAY_MS = 500; // particle-cli src/cmd/usb-util.js: REOPEN_DELAY, REOPEN_TIMEOUT
const REOPEN_TIMEOUT_MS = 60000;

let dev = null; // the open particle-usb Device

function native(d) {
	return d.usbDevice.internalObject; // the `usb` Device object: one per enumeration
}

async function closeDev() {
	if (dev) {
		const d = dev;
		dev = null;
		try {
			await d.close();
		} catch (_err) {
			// closing a device that has gone: nothing to do
		}
	}
}

// The open device; when there is none, open it (waiting for it to enumerate, as after a reset)
async function openDev() {
	if (!dev) {
		await reenumerated(null);
	}
	return dev;
}

// Wait until the enumeration `old` is off the bus (the device reset), then until the device is back (in DFU mode
// or not, as `dfu` says; null: either), and open it: what the CLI's reopen loop does after a mode change.
async function reenumerated(old, { dfu = null, timeoutMs = REOPEN_TIMEOUT_MS } = {}) {
	const start = bridge.now();
	if (old) {
		while ((await pusb.getDevices()).some(d => native(d) === old)) {
			if (bridge.now() - start > timeoutMs) {
				throw new Error(`the device was still on the bus ${timeoutMs} ms later`);
			}
			await bridge.sleep(50);
		}
	}
	const gone = bridge.now() - start;
	let lastError = null;
	for (;;) {
		try {
			const d = await pusb.openDeviceById(ID);
			if (dfu === null || d.isInDfuMode === dfu) {
				dev = d;
				return { gone_after_ms: old ? gone : null, back_after_ms: bridge.now() - start, dfu: d.isInDfuMode,
					firmwareVersion: d.firmwareVersion };
			}
			await d.close();
		} catch (err) {
			lastError = err;
		}
		if (bridge.now() - start > timeoutMs) {
			throw new Error(`the device did not come back${dfu === null ? '' : dfu ? ' in DFU mode' : ' in normal mode'} ` +
				`within ${timeoutMs} ms${lastError ? ` (last: ${lastError.message})` : ''}`);
		}
		await bridge.sleep(REOPEN_DELAY_MS);
	}
}

async function waitForDevice() {
	const start = bridge.now();
	for (;;) {
		const devs = await pusb.getDevices();
		if (devs.length) {
			return devs;
		}
		if (bridge.now() - start > 20000) {
			throw new Error('no Particle device enumerated within 20 s');
		}
		await bridge.sleep(100);
	}
}

function readFile(args) {
	return fs.readFileSync(args.file);
}

function describeError(err) {
	const causes = [];
	for (let c = err && err.cause; c; c = c.cause) {
		causes.push(`${c.name || 'Error'}: ${c.message}${c.errno !== undefined ? ` (errno ${c.errno})` : ''}`);
	}
	return { name: (err && err.constructor && err.constructor.name) || 'Error', message: String(err && err.message),
		errno: err && err.errno, causes, stack: String(err && err.stack).split('\n').slice(0, 6).join('\n') };
}

async function attempt(fn) {
	try {
		return { ok: true, value: await fn() };
	} catch (err) {
		return { ok: false, error: describeError(err) };
	}
}

// --- the steps: [particle-usb call(s) as reported, implementation] -----------------------------------------------

const STEPS = {
	environment: ["require('particle-usb'), and its require('usb')", async () => ({
		node: process.version,
		particleUsb: JSON.parse(fs.readFileSync(path.join(PUSB_DIR, 'package.json'), 'utf8')).version,
		usbResolvesTo: require.resolve('usb', { paths: [path.join(PUSB_DIR, 'src')] }),
		usbIsStandin: require('usb').isStandin === true,
		realUsbLoaded: Object.keys(require.cache).filter(k => /[\\/]node_modules[\\/]usb[\\/]/.test(k))
	})],
	list: ['getDevices()', async () => {
		const devs = await waitForDevice();
		return devs.map(d => ({ type: d.type, platformId: d.platformId, vendorId: d.vendorId, productId: d.productId,
			isInDfuMode: d.isInDfuMode }));
	}],
	open: ['openDeviceById(id)', async () => {
		await closeDev();
		const d = dev = await pusb.openDeviceById(ID);
		return { id: d.id, type: d.type, platformId: d.platformId, isInDfuMode: d.isInDfuMode,
			firmwareVersion: d.firmwareVersion };
	}],
	device_id: ['getDeviceId()', async () => (await openDev()).getDeviceId()],
	system_version: ['openDeviceById(id).firmwareVersion (vendor request 30 at open)', async () => {
		await closeDev();
		dev = await pusb.openDeviceById(ID);
		return dev.firmwareVersion;
	}],
	module_info: ['getFirmwareModuleInfo()', async () => (await openDev()).getFirmwareModuleInfo()],
	listen: ['enterListeningMode(), getDeviceMode()', async () => {
		const d = await openDev();
		await d.enterListeningMode();
		return d.getDeviceMode();
	}],
	stop_listening: ['leaveListeningMode(), getDeviceMode() until NORMAL', async () => {
		const d = await openDev();
		await d.leaveListeningMode();
		const start = bridge.now();
		let mode;
		do {
			mode = await d.getDeviceMode();
			if (mode === 'NORMAL') {
				break;
			}
			await bridge.sleep(100);
		} while (bridge.now() - start < 10000);
		return { mode, after_ms: bridge.now() - start };
	}],
	reset: ['reset()', async () => {
		const d = await openDev();
		const old = native(d);
		await d.reset();
		await closeDev();
		return reenumerated(old, { dfu: false });
	}],
	reset_late_poll: ['sendControlRequest(40 /* RESET */, null, {pollingPolicy: 1500})', async () => {
		const d = await openDev();
		const old = native(d);
		const rep = await d.sendControlRequest(40, null, { pollingPolicy: 1500 });
		await closeDev();
		return Object.assign({ result: rep.result }, await reenumerated(old, { dfu: false }));
	}],
	safe_mode: ['enterSafeMode()', async () => {
		const d = await openDev();
		const old = native(d);
		await d.enterSafeMode();
		await closeDev();
		return reenumerated(old, { dfu: false });
	}],
	enter_dfu: ['enterDfuMode()', async () => {
		const d = await openDev();
		await d.enterDfuMode();
		dev = null; // enterDfuMode closed it
		const back = await reenumerated(null, { dfu: true });
		return Object.assign(back, { isInDfuMode: dev.isInDfuMode, type: dev.type });
	}],
	dfu_protection: ['getProtectionState() in DFU mode', async () => (await openDev()).getProtectionState()],
	dfu_write_read: ['writeOverDfu(data, {altSetting: 0, startAddr}), readOverDfu({altSetting: 0, startAddr, size})',
		async (args) => {
			const d = await openDev();
			const data = readFile(args);
			await d.writeOverDfu(data, { altSetting: 0, startAddr: args.startAddr, leave: false });
			const read = async () => (await d.readOverDfu({ altSetting: 0, startAddr: args.startAddr, size: data.length }))
				.toString('hex');
			const first = await attempt(read);
			const second = first.ok ? null : await attempt(read);
			return { written: data.length, first, second };
		}],
	dfu_leave: ['reset() in DFU mode (the DfuSe leave)', async () => {
		const d = await openDev();
		const old = native(d);
		await d.reset();
		await closeDev();
		return reenumerated(old, { dfu: false });
	}],
	module_info_after_dfu: ['getFirmwareModuleInfo()', async () => (await openDev()).getFirmwareModuleInfo()],
	update_firmware: ['updateFirmware(data)', async (args) => {
		const d = await openDev();
		const old = native(d);
		await d.updateFirmware(readFile(args));
		await closeDev();
		return reenumerated(old, { dfu: false });
	}],
	module_info_after_update: ['getFirmwareModuleInfo()', async () => (await openDev()).getFirmwareModuleInfo()],
	dfu_safe_mode: ['enterDfuMode(), then enterSafeMode() in DFU mode (DfuSe 0xFA)', async () => {
		let d = await openDev();
		if (!d.isInDfuMode) {
			await d.enterDfuMode();
			dev = null;
			await reenumerated(null, { dfu: true });
			d = dev;
		}
		const old = native(d);
		await d.enterSafeMode();
		await closeDev();
		return reenumerated(old, { dfu: false });
	}]
};

async function main() {
	for (const name of plan.steps) {
		const [call, fn] = STEPS[name] || [name, async () => {
			throw new Error(`no step ${name} in driver.js`);
		}];
		bridge.call({ op: 'mark', step: name, call });
		const outcome = await attempt(() => fn((plan.args || {})[name] || {}));
		if (!outcome.ok) {
			await closeDev(); // the next step opens it afresh
		}
		bridge.call(Object.assign({ op: 'result', step: name, call }, outcome));
	}
	await closeDev();
}

main().then(() => {
	process.exitCode = 0;
}, (err) => {
	process.stderr.write(`driver: ${err && err.stack}\n`);
	process.exitCode = 1;
});
