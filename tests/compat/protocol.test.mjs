// The protocol below the SDK: raw gRPC calls that a buggy or hostile worker could
// make. Each gets an error status, never a crash, and changes nothing.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { credentials, makeGenericClientConstructor, Metadata } from "@grpc/grpc-js";
import { OrchestrationStatus } from "@microsoft/durabletask-js";

import { Empty, openStream, pb, rawEnvironment, stringValue, unary } from "./raw.mjs";

const Code = { INVALID_ARGUMENT: 3, NOT_FOUND: 5, FAILED_PRECONDITION: 9 };

function completeAction(result) {
  const complete = new pb.CompleteOrchestrationAction();
  complete.setOrchestrationstatus(pb.OrchestrationStatus.ORCHESTRATION_STATUS_COMPLETED);
  complete.setResult(stringValue(result));
  const action = new pb.OrchestratorAction();
  action.setId(0);
  action.setCompleteorchestration(complete);
  return action;
}

function orchestratorResponse(instanceId, token, actions) {
  const response = new pb.OrchestratorResponse();
  response.setInstanceid(instanceId);
  response.setCompletiontoken(token);
  for (const action of actions) response.addActions(action);
  return response;
}

describe("protocol misuse", () => {
  const env = rawEnvironment();
  let dtsd;
  let stub;
  let client;
  before(() => ({ dtsd, stub, client } = env));

  test("completions with unknown or malformed tokens are refused", async () => {
    const activity = new pb.ActivityResponse();
    activity.setInstanceid("nobody");
    activity.setTaskid(0);
    activity.setCompletiontoken("999.a1");
    await assert.rejects(unary(stub, "completeActivityTask", activity), (e) => e.code === Code.FAILED_PRECONDITION);
    activity.setCompletiontoken("not a token");
    await assert.rejects(unary(stub, "completeActivityTask", activity), (e) => e.code === Code.INVALID_ARGUMENT);
    await assert.rejects(unary(stub, "completeOrchestratorTask", orchestratorResponse("nobody", "1.o42", [completeAction("1")])),
                         (e) => e.code === Code.FAILED_PRECONDITION);
    const abandon = new pb.AbandonActivityTaskRequest();
    abandon.setCompletiontoken("5.a5");
    await assert.rejects(unary(stub, "abandonTaskActivityWorkItem", abandon), (e) => e.code === Code.FAILED_PRECONDITION);
  });

  test("a bad completion leaves the work item held; a double completion is refused and changes nothing", async () => {
    const work = openStream(stub);
    try {
      const id = await client.scheduleNewOrchestration("RawOrchestration", 1);
      const item = await work.next((i) => i.hasOrchestratorrequest() && i.getOrchestratorrequest().getInstanceid() === id);
      const token = item.getCompletiontoken();
      const newEvents = item.getOrchestratorrequest().getNeweventsList();
      assert.ok(newEvents[0].hasOrchestratorstarted(), "new events begin with OrchestratorStarted");

      // The token names another instance; an action with no type; both refused.
      await assert.rejects(unary(stub, "completeOrchestratorTask", orchestratorResponse("someone-else", token, [completeAction("1")])),
                           (e) => e.code === Code.INVALID_ARGUMENT);
      const empty = new pb.OrchestratorAction();
      empty.setId(3);
      await assert.rejects(unary(stub, "completeOrchestratorTask", orchestratorResponse(id, token, [empty])),
                           (e) => e.code === Code.INVALID_ARGUMENT && /action/.test(e.details));
      assert.equal((await client.getOrchestrationState(id)).runtimeStatus, OrchestrationStatus.PENDING);

      await unary(stub, "completeOrchestratorTask", orchestratorResponse(id, token, [completeAction('"first"')]));
      await assert.rejects(unary(stub, "completeOrchestratorTask", orchestratorResponse(id, token, [completeAction('"second"')])),
                           (e) => e.code === Code.FAILED_PRECONDITION);
      const state = await client.waitForOrchestrationCompletion(id, true, 30);
      assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
      assert.equal(JSON.parse(state.serializedOutput), "first");
    } finally {
      work.stream.cancel();
    }
  });

  test("an abandoned work item comes back under a new token", async () => {
    const work = openStream(stub);
    try {
      const id = await client.scheduleNewOrchestration("RawOrchestration", 2);
      const item = await work.next((i) => i.hasOrchestratorrequest() && i.getOrchestratorrequest().getInstanceid() === id);
      const abandon = new pb.AbandonOrchestrationTaskRequest();
      abandon.setCompletiontoken(item.getCompletiontoken());
      await unary(stub, "abandonTaskOrchestratorWorkItem", abandon);
      const again = await work.next((i) => i.hasOrchestratorrequest() && i.getOrchestratorrequest().getInstanceid() === id);
      assert.notEqual(again.getCompletiontoken(), item.getCompletiontoken());
      await unary(stub, "completeOrchestratorTask", orchestratorResponse(id, again.getCompletiontoken(), [completeAction("2")]));
      assert.equal((await client.waitForOrchestrationCompletion(id, true, 30)).runtimeStatus, OrchestrationStatus.COMPLETED);
    } finally {
      work.stream.cancel();
    }
  });

  test("bytes that are not a protobuf message get an error, and dtsd keeps serving", async () => {
    const Raw = makeGenericClientConstructor({
      StartInstance: {
        path: "/TaskHubSidecarService/StartInstance",
        requestStream: false,
        responseStream: false,
        requestSerialize: (bytes) => bytes,
        requestDeserialize: (bytes) => bytes,
        responseSerialize: (bytes) => bytes,
        responseDeserialize: (bytes) => bytes,
      },
    }, "TaskHubSidecarService");
    const raw = new Raw(dtsd.address, credentials.createInsecure());
    try {
      const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12]);
      await assert.rejects(new Promise((resolve, reject) =>
        raw.StartInstance(garbage, new Metadata(), (e, r) => (e ? reject(e) : resolve(r)))), (e) => e.code !== 0);
    } finally {
      raw.close();
    }
    await unary(stub, "hello", new Empty());
    const id = await client.scheduleNewOrchestration("RawOrchestration", 3);
    assert.equal((await client.getOrchestrationState(id)).name, "RawOrchestration");
  });

  test("a cancelled wait ends on the server, which keeps serving", async () => {
    const id = await client.scheduleNewOrchestration("RawOrchestration", 4);  // No worker: never finishes.
    const request = new pb.GetInstanceRequest();
    request.setInstanceid(id);
    const outcome = new Promise((resolve) => {
      const call = stub.waitForInstanceCompletion(request, new Metadata(), (error) => resolve(error));
      setTimeout(() => call.cancel(), 300);
    });
    const error = await outcome;
    assert.equal(error.code, 1 /* CANCELLED */);
    await unary(stub, "hello", new Empty());
    assert.equal((await client.getOrchestrationState(id)).runtimeStatus, OrchestrationStatus.PENDING);
  });

  test("task hubs: create and delete through the taskhub header", async () => {
    const metadata = new Metadata();
    metadata.set("taskhub", "extra");
    await unary(stub, "createTaskHub", new pb.CreateTaskHubRequest(), metadata);
    const start = new pb.CreateInstanceRequest();
    start.setInstanceid("in-extra");
    start.setName("RawOrchestration");
    await unary(stub, "startInstance", start, metadata);
    const get = new pb.GetInstanceRequest();
    get.setInstanceid("in-extra");
    assert.equal((await unary(stub, "getInstance", get, metadata)).getExists(), true);
    assert.equal((await unary(stub, "getInstance", get)).getExists(), false, "hubs are separate");
    metadata.set("dtsd-force-delete", "true");  // It holds an instance.
    await unary(stub, "deleteTaskHub", new pb.DeleteTaskHubRequest(), metadata);
    await assert.rejects(unary(stub, "getInstance", get, metadata), (e) => e.code === Code.NOT_FOUND);
  });

  test("skip graceful terminations: running instances end at once, the rest are reported", async () => {
    const running = await client.scheduleNewOrchestration("RawOrchestration", 5);
    const batch = new pb.InstanceBatch();
    batch.setInstanceidsList([running, "no-such-instance"]);
    const request = new pb.SkipGracefulOrchestrationTerminationsRequest();
    request.setInstancebatch(batch);
    const response = await unary(stub, "skipGracefulOrchestrationTerminations", request);
    assert.deepEqual(response.getUnterminatedinstanceidsList(), ["no-such-instance"]);
    assert.equal((await client.getOrchestrationState(running)).runtimeStatus, OrchestrationStatus.TERMINATED);
  });

  test("an unknown task hub is NOT_FOUND, naming the hub", async () => {
    const metadata = new Metadata();
    metadata.set("taskhub", "no-such-hub");
    const request = new pb.GetInstanceRequest();
    request.setInstanceid("x");
    await assert.rejects(unary(stub, "getInstance", request, metadata),
                         (e) => e.code === Code.NOT_FOUND && /no-such-hub/.test(e.details));
  });
  // Last: it stops dtsd.
  test("a work stream for an unknown hub is refused, and dtsd still drains and exits 0", async () => {
    const metadata = new Metadata();
    metadata.set("taskhub", "no-such-hub");
    const refused = await new Promise((resolve) => {
      const stream = stub.getWorkItems(new pb.GetWorkItemsRequest(), metadata);
      stream.on("error", (e) => resolve(e));
      stream.on("data", () => {});
      setTimeout(() => stream.cancel(), 50);
    });
    assert.ok(refused.code === Code.NOT_FOUND || refused.code === 1 /* CANCELLED first */, `code ${refused.code}`);
    const open = stub.getWorkItems(new pb.GetWorkItemsRequest(), new Metadata());
    open.on("error", () => {});
    open.on("data", () => {});
    await unary(stub, "hello", new Empty());
    assert.equal(await dtsd.stop(), 0);
  });
});
