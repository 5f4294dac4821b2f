// A player as a page would write it, checked against hub/web/client.d.ts: the declarations
// must describe what the client takes and gives, so that editors complete it.
import { HubClient, HubRefused, RoomRefused, socketUrl } from "../../hub/web/client.js";

const client = new HubClient([socketUrl()], async () => "a-token", {
  rooms: ["location:lobby"],
  onEvent: (event) => console.log(event.room, event.event, event.id, event.state === true),
  onState: (room, events) => console.log(room, events.length),
  onLost: (room) => console.warn(`resync ${room}`),
  onError: (error) => {
    if (error instanceof RoomRefused) console.warn(error.room, error.code, error.reason);
    if (error instanceof HubRefused) console.warn(error.status, error.code, error.reason);
  },
  heartbeat: () => ({ status: "playing", cpu: 12 }),
  acknowledgeCommands: true,
});
client.start();
const welcome = await client.whenConnected();
console.log(welcome.node, welcome.rooms);
await client.publish("location:lobby", "x.note", { text: "hello" });
await client.stop();
