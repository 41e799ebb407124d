// provision.ino — the otabox factory-bench sketch, for the ESP8266 and the
// ESP32 (Arduino cores: ESP8266 3.x, ESP32 2.x/3.x).
//
// Flash it once on every board of a tray (esptool or the IDE). On power-up
// a board joins the bench Wi-Fi, finds otabox over mDNS (service
// _acupdate._tcp, retried with back-off), and asks its /update for the
// production image of the open batch. The updater flashes it and reboots.
//
// The production image must ask /update once after it boots: otabox
// answers 304 and that check-in, running the new image, is what marks the
// board "confirmed" on the station page. Build your production firmware
// from this sketch (put your application in loop() and set APP_VERSION),
// or call checkIn() from your own setup().
//
// This sketch is not compiled by otabox's tests (no ESP toolchain there);
// the device emulator's provisioner profile (appliance/emu/provision.go)
// sends exactly its requests, and the tests run that end to end.

#if defined(ESP8266)
#include <ESP8266WiFi.h>
#include <ESP8266mDNS.h>
#include <ESP8266httpUpdate.h>
#define httpUpdate ESPhttpUpdate
#elif defined(ESP32)
#include <WiFi.h>
#include <ESPmDNS.h>
#include <HTTPUpdate.h>
#else
#error "provision.ino is for the ESP8266 and the ESP32"
#endif

#ifndef BENCH_SSID
#define BENCH_SSID "otabox-bench"
#endif
#ifndef BENCH_PASS
#define BENCH_PASS "change-me"
#endif
#ifndef APP_VERSION
#define APP_VERSION "provision"
#endif

// What the board says about itself, passed as the updater's
// currentVersion (x-ESP8266-version / x-ESP32-version): otabox records
// chip= and rev= in the batch report.
static String reportVersion() {
#if defined(ESP8266)
  return String(APP_VERSION) + " chip=ESP8266EX";
#else
  return String(APP_VERSION) + " chip=" + ESP.getChipModel() + " rev=" + String(ESP.getChipRevision());
#endif
}

// findOtabox asks mDNS for _acupdate._tcp until an otabox answers,
// waiting 1 s, 2 s, 4 s ... (at most 30 s) between tries.
static bool findOtabox(IPAddress& ip, uint16_t& port) {
  uint32_t backoff = 1000;
  for (;;) {
    int n = MDNS.queryService("acupdate", "tcp");
    if (n > 0) {
#if defined(ESP8266) || !defined(ESP_ARDUINO_VERSION_MAJOR) || ESP_ARDUINO_VERSION_MAJOR < 3
      ip = MDNS.IP(0);       // ESP8266, and arduino-esp32 1.x/2.x (no address())
#else
      ip = MDNS.address(0);  // arduino-esp32 3.x
#endif
      port = MDNS.port(0);
      Serial.printf("otabox found: %s:%u (%s)\n", ip.toString().c_str(), port, MDNS.hostname(0).c_str());
      return true;
    }
    Serial.printf("no otabox answered; asking again in %u ms\n", backoff);
    delay(backoff);
    backoff = backoff * 2 > 30000 ? 30000 : backoff * 2;
  }
}

// checkIn asks /update: a new image is flashed and the board reboots
// into it; "no update" means it already runs the batch image (confirmed).
static void checkIn() {
  IPAddress ip;
  uint16_t port;
  findOtabox(ip, port);
  WiFiClient client;
  httpUpdate.rebootOnUpdate(true);
  HTTPUpdateResult ret = httpUpdate.update(client, ip.toString(), port, "/update", reportVersion());
  switch (ret) {
    case HTTP_UPDATE_OK:
      Serial.println("updated; rebooting");  // not reached: the core reboots
      break;
    case HTTP_UPDATE_NO_UPDATES:
      Serial.println("confirmed: running the production image " APP_VERSION);
      break;
    case HTTP_UPDATE_FAILED:
      Serial.printf("update failed (%d): %s\n", httpUpdate.getLastError(), httpUpdate.getLastErrorString().c_str());
      break;
  }
}

void setup() {
  Serial.begin(115200);
  Serial.println();
  Serial.println("otabox provision " APP_VERSION);
  WiFi.mode(WIFI_STA);
  WiFi.begin(BENCH_SSID, BENCH_PASS);
  while (WiFi.status() != WL_CONNECTED) {
    delay(250);
  }
  Serial.printf("joined %s as %s, MAC %s\n", BENCH_SSID, WiFi.localIP().toString().c_str(), WiFi.macAddress().c_str());
  String host = "board-" + WiFi.macAddress();
  host.replace(":", "");
  MDNS.begin(host.c_str());
  checkIn();
}

void loop() {
#if defined(ESP8266)
  MDNS.update();
#endif
  // Your application goes here in the production build.
  delay(10);
}
