'use strict';
// A stand-in for node's `usb` package (node-usb 2.x, the libusb bindings particle-usb 4.1 requires), serving the
// simulated bench of tests/interop/particle_usb_bridge.py instead of libusb.
//
// Only the surface particle-usb uses (src/usb-device-node.js): usb.getDeviceList(); a Device's deviceDescriptor,
// configDescriptor, timeout, open(), close(), interfaces, interface(n), controlTransfer(), getStringDescriptor();
// an Interface's claim(), release(cb), setAltSetting(alt, cb). It behaves as node-usb does (read in node-usb's
// src/device.cc, src/transfer.cc, src/node_usb.cc and tsc/usb/device.ts, interface.ts):
// - getDeviceList() gives the same object for the same enumeration (node-usb keeps one per libusb_device), so
//   particle-usb's `dev.particle` state survives between lists; a device that re-enumerated is a new object;
// - descriptors come from the enumeration (the OS caches them: no control transfer);
// - open(), close() and claim() are synchronous and throw; release() and setAltSetting() call back later;
// - controlTransfer() never calls back inside the call: its callback gets (error, data) for IN transfers and
//   (error, actualLength) for OUT ones;
// - errors are node-usb's LibUSBException: an Error whose message is libusb_error_name(code) and whose errno is
//   the code. A libusb call that fails (libusb_open, libusb_claim_interface, libusb_set_interface_alt_setting,
//   libusb_submit_transfer on a device that has gone) gives a LIBUSB_ERROR_* code (NO_DEVICE -4, PIPE -9,
//   TIMEOUT -7, ACCESS -3 ...); a submitted transfer that fails completes with its libusb_transfer_status
//   instead: LIBUSB_TRANSFER_STALL (4), LIBUSB_TRANSFER_TIMED_OUT (2), LIBUSB_TRANSFER_NO_DEVICE (5),
//   LIBUSB_TRANSFER_ERROR (1). particle-usb tells a stall by the message 'LIBUSB_TRANSFER_STALL'.
const bridge = require('./bridge_client');

const C = {
	LIBUSB_SUCCESS: 0,
	LIBUSB_ERROR_IO: -1,
	LIBUSB_ERROR_INVALID_PARAM: -2,
	LIBUSB_ERROR_ACCESS: -3,
	LIBUSB_ERROR_NO_DEVICE: -4,
	LIBUSB_ERROR_NOT_FOUND: -5,
	LIBUSB_ERROR_BUSY: -6,
	LIBUSB_ERROR_TIMEOUT: -7,
	LIBUSB_ERROR_OVERFLOW: -8,
	LIBUSB_ERROR_PIPE: -9,
	LIBUSB_ERROR_INTERRUPTED: -10,
	LIBUSB_ERROR_NO_MEM: -11,
	LIBUSB_ERROR_NOT_SUPPORTED: -12,
	LIBUSB_ERROR_OTHER: -99,
	LIBUSB_TRANSFER_COMPLETED: 0,
	LIBUSB_TRANSFER_ERROR: 1,
	LIBUSB_TRANSFER_TIMED_OUT: 2,
	LIBUSB_TRANSFER_CANCELLED: 3,
	LIBUSB_TRANSFER_STALL: 4,
	LIBUSB_TRANSFER_NO_DEVICE: 5,
	LIBUSB_TRANSFER_OVERFLOW: 6,
	LIBUSB_ENDPOINT_IN: 0x80,
	LIBUSB_ENDPOINT_OUT: 0x00,
	LIBUSB_REQUEST_GET_DESCRIPTOR: 0x06,
	LIBUSB_DT_DEVICE: 0x01,
	LIBUSB_DT_CONFIG: 0x02,
	LIBUSB_DT_STRING: 0x03,
	LIBUSB_DT_INTERFACE: 0x04,
	LIBUSB_DT_ENDPOINT: 0x05,
	LIBUSB_DT_BOS: 0x0f,
	LIBUSB_CONTROL_SETUP_SIZE: 8,
	LIBUSB_TRANSFER_TYPE_CONTROL: 0
};

// libusb_error_name() for both kinds of code (libusb's strerror.c / core.c)
const NAMES = {};
for (const [name, value] of Object.entries(C)) {
	if (name.startsWith('LIBUSB_ERROR_') || name === 'LIBUSB_SUCCESS') {
		NAMES[`e${value}`] = name;
	} else if (name.startsWith('LIBUSB_TRANSFER_') && !name.startsWith('LIBUSB_TRANSFER_TYPE')) {
		NAMES[`t${value}`] = name;
	}
}

function libusbException(code, transferStatus = false) {
	const name = NAMES[`${transferStatus ? 't' : 'e'}${code}`] || '**UNKNOWN**';
	const err = new Error(name);
	err.errno = code;
	return err;
}

// What the bridge answers for a failed operation: {errno, message, transfer_status?}
function errorFrom(reply) {
	const e = reply.error;
	if (e.transfer_status !== undefined) {
		return libusbException(e.transfer_status, true);
	}
	return libusbException(e.errno, false);
}

function hex(buf) {
	return Buffer.from(buf).toString('hex');
}

// --- descriptors, parsed from the bytes the enumeration cached, the way libusb's descriptor.c does ---------------

function parseDeviceDescriptor(b) {
	return {
		bLength: b[0],
		bDescriptorType: b[1],
		bcdUSB: b.readUInt16LE(2),
		bDeviceClass: b[4],
		bDeviceSubClass: b[5],
		bDeviceProtocol: b[6],
		bMaxPacketSize0: b[7],
		idVendor: b.readUInt16LE(8),
		idProduct: b.readUInt16LE(10),
		bcdDevice: b.readUInt16LE(12),
		iManufacturer: b[14],
		iProduct: b[15],
		iSerialNumber: b[16],
		bNumConfigurations: b[17]
	};
}

function parseConfigDescriptor(b) {
	const config = {
		bLength: b[0],
		bDescriptorType: b[1],
		wTotalLength: b.readUInt16LE(2),
		bNumInterfaces: b[4],
		bConfigurationValue: b[5],
		iConfiguration: b[6],
		bmAttributes: b[7],
		MaxPower: b[8] * 2,
		extra: Buffer.alloc(0),
		interfaces: []
	};
	let current = config; // class-specific descriptors go to the extra of what they follow
	let offs = b[0];
	while (offs + 2 <= b.length) {
		const len = b[offs];
		const type = b[offs + 1];
		if (len < 2) {
			break;
		}
		const d = b.subarray(offs, offs + len);
		if (type === C.LIBUSB_DT_INTERFACE) {
			current = {
				bLength: d[0],
				bDescriptorType: d[1],
				bInterfaceNumber: d[2],
				bAlternateSetting: d[3],
				bNumEndpoints: d[4],
				bInterfaceClass: d[5],
				bInterfaceSubClass: d[6],
				bInterfaceProtocol: d[7],
				iInterface: d[8],
				extra: Buffer.alloc(0),
				endpoints: []
			};
			while (config.interfaces.length <= current.bInterfaceNumber) {
				config.interfaces.push([]);
			}
			config.interfaces[current.bInterfaceNumber].push(current);
		} else if (type === C.LIBUSB_DT_ENDPOINT) {
			const ep = {
				bLength: d[0],
				bDescriptorType: d[1],
				bEndpointAddress: d[2],
				bmAttributes: d[3],
				wMaxPacketSize: d.readUInt16LE(4),
				bInterval: d[6],
				bRefresh: 0,
				bSynchAddress: 0,
				extra: Buffer.alloc(0)
			};
			const ifaces = config.interfaces[config.interfaces.length - 1];
			ifaces[ifaces.length - 1].endpoints.push(ep);
			current = ep;
		} else {
			current.extra = Buffer.concat([current.extra, d]);
		}
		offs += len;
	}
	return config;
}

// --- Interface ----------------------------------------------------------------------------------------------------

class Interface {
	constructor(device, id) {
		this.device = device;
		this.id = id;
		this.altSetting = 0;
		this.refresh();
	}

	refresh() {
		const config = this.device.configDescriptor;
		if (!config) {
			return;
		}
		this.descriptor = config.interfaces[this.id][this.altSetting];
		this.interfaceNumber = this.descriptor.bInterfaceNumber;
		this.endpoints = []; // no endpoint is used by particle-usb; none is modelled
	}

	claim() {
		this.device._call({ op: 'claim', interface: this.id });
	}

	release(closeEndpointsOrCallback, callback) {
		if (typeof closeEndpointsOrCallback === 'function') {
			callback = closeEndpointsOrCallback;
		}
		this.device._async({ op: 'release', interface: this.id }, (err) => {
			if (!err) {
				this.altSetting = 0;
				this.refresh();
			}
			if (callback) {
				callback.call(this, err);
			}
		});
	}

	setAltSetting(altSetting, callback) {
		this.device._async({ op: 'set_alt', interface: this.id, alt: altSetting }, (err) => {
			if (!err) {
				this.altSetting = altSetting;
				this.refresh();
			}
			if (callback) {
				callback.call(this, err);
			}
		});
	}

	isKernelDriverActive() {
		return false;
	}

	detachKernelDriver() {}

	attachKernelDriver() {}
}

// --- Device -------------------------------------------------------------------------------------------------------

const DEFAULT_TIMEOUT = 1000;

class Device {
	constructor(info) {
		this._key = info.key;
		this._handle = null;
		this._pending = 0; // transfers submitted whose completion has not been delivered
		this._timeout = DEFAULT_TIMEOUT;
		this.busNumber = info.bus;
		this.deviceAddress = info.address;
		this.portNumbers = info.ports;
		this.deviceDescriptor = parseDeviceDescriptor(Buffer.from(info.device, 'hex'));
		this._config = parseConfigDescriptor(Buffer.from(info.config, 'hex'));
		this.interfaces = undefined;
	}

	get timeout() {
		return this._timeout || DEFAULT_TIMEOUT;
	}

	set timeout(value) {
		this._timeout = value;
	}

	get configDescriptor() {
		return this._config;
	}

	get allConfigDescriptors() {
		return [this._config];
	}

	get parent() {
		return null;
	}

	open(defaultConfig = true) {
		if (this._handle === null) {
			const reply = bridge.call({ op: 'open', key: this._key });
			if (reply.error) {
				throw errorFrom(reply);
			}
			this._handle = reply.handle;
		}
		this.interfaces = [];
		if (defaultConfig === false) {
			return;
		}
		const n = this.configDescriptor ? this.configDescriptor.interfaces.length : 0;
		for (let i = 0; i < n; i++) {
			this.interfaces[i] = new Interface(this, i);
		}
	}

	close() {
		if (this._pending > 0) {
			throw new Error("Can't close device with a pending request");
		}
		if (this._handle !== null) {
			bridge.call({ op: 'close', handle: this._handle });
			this._handle = null;
		}
		this.interfaces = undefined;
	}

	interface(addr) {
		if (!this.interfaces) {
			throw new Error('Device must be open before searching for interfaces');
		}
		addr = addr || 0;
		for (const iface of this.interfaces) {
			if (iface.interfaceNumber === addr) {
				return iface;
			}
		}
		throw new Error(`Interface not found for address: ${addr}`);
	}

	controlTransfer(bmRequestType, bRequest, wValue, wIndex, dataOrLength, callback) {
		const isIn = !!(bmRequestType & C.LIBUSB_ENDPOINT_IN);
		if (isIn) {
			if (!(dataOrLength >= 0)) {
				throw new TypeError('Expected size number for IN transfer (based on bmRequestType)');
			}
		} else if (!(dataOrLength instanceof Uint8Array)) {
			throw new TypeError('Expected buffer for OUT transfer (based on bmRequestType)');
		}
		if (this._handle === null) {
			throw new Error('Device is not open'); // node-usb's Transfer.submit throws this synchronously
		}
		const msg = {
			op: 'control', handle: this._handle, bm: bmRequestType, request: bRequest, value: wValue, index: wIndex,
			timeout: this.timeout
		};
		if (isIn) {
			msg.length = dataOrLength;
		} else {
			msg.data = hex(dataOrLength);
		}
		const reply = bridge.call(msg);
		this._pending++;
		bridge.defer(() => {
			this._pending--;
			if (!callback) {
				return;
			}
			if (reply.error) {
				callback.call(this, errorFrom(reply), isIn ? Buffer.alloc(0) : 0);
			} else if (isIn) {
				callback.call(this, undefined, Buffer.from(reply.data, 'hex'));
			} else {
				callback.call(this, undefined, reply.actual);
			}
		});
		return this;
	}

	getStringDescriptor(descIndex, callback) {
		if (descIndex === 0) {
			callback();
			return;
		}
		this.controlTransfer(C.LIBUSB_ENDPOINT_IN, C.LIBUSB_REQUEST_GET_DESCRIPTOR, (C.LIBUSB_DT_STRING << 8) | descIndex,
			0x0409, 255, (error, buffer) => {
				if (error) {
					return callback(error);
				}
				callback(undefined, buffer.toString('utf16le', 2));
			});
	}

	setAutoDetachKernelDriver() {}

	// a synchronous libusb call through the bridge: throws its error
	_call(msg) {
		if (this._handle === null) {
			throw new Error('Device is not open');
		}
		const reply = bridge.call(Object.assign({ handle: this._handle }, msg));
		if (reply.error) {
			throw errorFrom(reply);
		}
		return reply;
	}

	// a libusb call node-usb runs on a worker thread: the callback comes later, with the error or undefined
	_async(msg, callback) {
		if (this._handle === null) {
			throw new Error('Device is not open');
		}
		const reply = bridge.call(Object.assign({ handle: this._handle }, msg));
		bridge.defer(() => callback(reply.error ? errorFrom(reply) : undefined));
	}
}

// node-usb keeps one Device per libusb_device: the same enumeration gives the same object.
const known = new Map();

function getDeviceList() {
	const reply = bridge.call({ op: 'list' });
	const seen = new Set();
	const list = reply.devices.map(info => {
		seen.add(info.key);
		if (!known.has(info.key)) {
			known.set(info.key, new Device(info));
		}
		return known.get(info.key);
	});
	for (const key of known.keys()) {
		if (!seen.has(key)) {
			known.delete(key); // gone: libusb unrefs it; a new enumeration gets a new object
		}
	}
	return list;
}

function findByIds(vid, pid) {
	return getDeviceList().find(d => d.deviceDescriptor.idVendor === vid && d.deviceDescriptor.idProduct === pid);
}

module.exports = Object.assign({}, C, {
	getDeviceList,
	findByIds,
	Device,
	Interface,
	LibUSBException: Error,
	isStandin: true
});
