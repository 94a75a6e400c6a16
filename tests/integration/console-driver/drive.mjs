// Drives the hub console in headless Chromium (Debian's, through
// playwright-core: no browser download) for tests/integration/test_console.py.
//
//   node drive.mjs URL USER PASSWORD DEVICE_JID SCREENSHOT
//
// Logs in through the page, waits for the device to show online with a
// Temperature reading, then for that reading to update (its value or its
// time), saves a screenshot and prints one JSON line of what it saw.
// Each step is bounded; a failure prints {"error": ...} and exits 1.
import { chromium } from "playwright-core";

const [url, user, password, jid, shot] = process.argv.slice(2);
const STEP_MS = 30000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // The test may run as root in a container, where the sandbox cannot start.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const seen = { steps: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 520 } });
  page.setDefaultTimeout(STEP_MS);
  const consoleErrors = [];
  // Script errors only: the expected 401 before the login is logged as a failed load.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(url);
  await page.locator("#login-form").waitFor({ state: "visible" });
  seen.steps.push("login form");
  await page.fill("#user", user);
  await page.fill("#password", password);
  await page.click("#login");
  await page.locator("#devices-view").waitFor({ state: "visible" });
  await page.locator("#login-form").waitFor({ state: "hidden" });
  seen.steps.push("logged in");
  const row = page.locator(`tr[data-jid="${jid}"]`);
  await row.locator(".state.online").waitFor();
  seen.steps.push("online");
  const temp = row.locator('.reading[data-name="Temperature"]');
  await temp.waitFor();
  const reading = async () => (await row.locator(".readings").innerText()).trim();
  seen.first = await reading();
  seen.steps.push("reading");
  const deadline = Date.now() + STEP_MS;
  while ((seen.second = await reading()) === seen.first) {
    if (Date.now() > deadline) throw new Error("the reading did not update: " + seen.first);
    await page.waitForTimeout(250);
  }
  seen.steps.push("reading updated");
  seen.live = await page.locator("#live").innerText();
  seen.cookie = (await page.context().cookies()).map((c) => ({
    name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path }));
  seen.scriptCanReadCookie = await page.evaluate(() => document.cookie.includes("stanzad_console"));
  await page.screenshot({ path: shot, fullPage: true });
  seen.consoleErrors = consoleErrors;
  console.log(JSON.stringify(seen));
} catch (e) {
  console.log(JSON.stringify({ error: String(e), ...seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
