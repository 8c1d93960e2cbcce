#!/usr/bin/env node
// Drive a simulated tool with node-opcua, an OPC UA stack that shares nothing with asyncua.
//
//   node probe.js plan.json
//
// The plan (written by tests/interop/test_node_opcua.py from mes/opcua/model.py) names the
// endpoint, the browse paths, the method calls and the event fields, so this script knows no
// browse name of its own. It connects (SecurityPolicy None, or Basic256Sha256 with the plan's
// client certificate when the plan has `security`), browses the machine, reads the
// plan's variables, subscribes to events of the Server object, makes the calls in order and
// waits for the job status event the plan asks for. It prints one line
// `PROBE-RESULT {json}` and exits 0, or prints `PROBE-RESULT {"error": ...}` and exits 1.
"use strict";

const fs = require("fs");
const path = require("path");
const {
    AttributeIds,
    BrowseDirection,
    DataType,
    MessageSecurityMode,
    OPCUAClient,
    SecurityPolicy,
    TimestampsToReturn,
    constructEventFilter,
} = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

const OBJECTS = "ns=0;i=85";
const SERVER = "ns=0;i=2253";
const HIERARCHICAL = "ns=0;i=33";

function emit(result) {
    process.stdout.write(`PROBE-RESULT ${JSON.stringify(result)}\n`);
}

function plain(value) {
    // Variant values as JSON: 64-bit integers arrive as [high, low] words.
    if (typeof value === "bigint") return Number(value);
    if (Array.isArray(value)) return value.map(plain);
    if (value && typeof value === "object" && "text" in value) return value.text;
    if (value && typeof value.toString === "function" && typeof value !== "string" &&
        typeof value !== "number" && typeof value !== "boolean") {
        return value.toString();
    }
    return value;
}

async function main() {
    const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
    const certificateManager = new OPCUACertificateManager({
        rootFolder: path.join(plan.scratch, "pki"),
        automaticallyAcceptUnknownCertificate: true,
    });
    const security = plan.security || { mode: "None", policy: "None" };
    const client = OPCUAClient.create({
        applicationName: "fab-mes interop probe",
        applicationUri: security.applicationUri || "urn:fab-mes:interop:node-opcua",
        clientCertificateManager: certificateManager,
        certificateFile: security.certificateFile,
        privateKeyFile: security.privateKeyFile,
        securityMode: MessageSecurityMode[security.mode],
        securityPolicy: SecurityPolicy[security.policy],
        endpointMustExist: false,
        connectionStrategy: { maxRetry: 3, initialDelay: 200, maxDelay: 1000 },
        requestedSessionTimeout: 60000,
    });
    const result = { calls: {}, reads: {}, events: [], security };
    await client.connect(plan.endpoint);
    const session = await client.createSession();
    result.channel = {
        mode: MessageSecurityMode[session.endpoint.securityMode],
        policy: session.endpoint.securityPolicyUri,
    };
    try {
        const namespaces = await session.readNamespaceArray();
        const ns = (uri) => {
            const index = namespaces.indexOf(uri);
            if (index < 0) throw new Error(`namespace ${uri} not on the server`);
            return index;
        };
        result.serverNamespaces = plan.namespaces.filter((uri) => namespaces.includes(uri));

        async function resolve(start, steps) {
            const [res] = await session.translateBrowsePath([{
                startingNode: start,
                relativePath: {
                    elements: steps.map(([uri, name]) => ({
                        referenceTypeId: HIERARCHICAL,
                        isInverse: false,
                        includeSubtypes: true,
                        targetName: { namespaceIndex: ns(uri), name },
                    })),
                },
            }]);
            if (!res.statusCode.isGood() || !res.targets || res.targets.length === 0) {
                throw new Error(`no node at ${steps.map((s) => s[1]).join("/")}: ${res.statusCode}`);
            }
            return res.targets[0].targetId.toString();
        }

        // Browse the machine.
        const machine = await resolve(OBJECTS, plan.machine);
        const browsed = await session.browse({
            nodeId: machine,
            browseDirection: BrowseDirection.Forward,
            referenceTypeId: HIERARCHICAL,
            includeSubtypes: true,
            resultMask: 63,
        });
        result.machine = machine;
        result.children = browsed.references.map((r) => r.browseName.name).sort();

        // Read variables.
        for (const [name, steps] of Object.entries(plan.reads)) {
            const dv = await session.read({
                nodeId: await resolve(machine, steps),
                attributeId: AttributeIds.Value,
            });
            result.reads[name] = { status: dv.statusCode.name, value: plain(dv.value.value) };
        }

        // Subscribe to the Server object's events.
        const fields = ["EventType", "SourceName", "Message", "Time"];
        const custom = plan.eventFields.map(([uri, name]) => ({ namespaceIndex: ns(uri), name }));
        const filter = constructEventFilter([...fields, ...custom]);
        const subscription = await session.createSubscription2({
            requestedPublishingInterval: 50,
            requestedLifetimeCount: 1000,
            requestedMaxKeepAliveCount: 20,
            maxNotificationsPerPublish: 1000,
            publishingEnabled: true,
            priority: 1,
        });
        const names = [...fields, ...plan.eventFields.map(([, name]) => name)];
        let done;
        const wanted = new Promise((resolveWanted) => { done = resolveWanted; });
        const item = await subscription.monitor(
            { nodeId: SERVER, attributeId: AttributeIds.EventNotifier },
            { samplingInterval: 0, discardOldest: false, queueSize: 1000, filter },
            TimestampsToReturn.Neither,
        );
        item.on("changed", (values) => {
            const event = {};
            names.forEach((name, i) => { event[name] = plain(values[i].value); });
            result.events.push(event);
            const w = plan.waitFor;
            if (event[w.field] === w.equals && w.states.includes(event[w.stateField])) done(event);
        });

        // Call the methods in order.
        for (const call of plan.calls) {
            const objectId = await resolve(machine, call.object);
            const methodId = await resolve(objectId, [call.method]);
            const res = await session.call({
                objectId,
                methodId,
                inputArguments: call.args.map((value) => ({ dataType: DataType.String, value })),
            });
            result.calls[call.label] = {
                status: res.statusCode.name,
                outputs: (res.outputArguments || []).map((v) => plain(v.value)),
            };
        }

        const timeout = new Promise((_, reject) =>
            setTimeout(() => reject(new Error("timed out waiting for the job event")), plan.timeoutMs));
        result.jobEvent = await Promise.race([wanted, timeout]);
        await subscription.terminate();
    } finally {
        await session.close();
        await client.disconnect();
    }
    emit(result);
}

main().then(
    () => process.exit(0),
    (err) => {
        emit({ error: String(err && err.stack ? err.stack : err) });
        process.exit(1);
    },
);
