// Blank Slate kiosk profile. Every session starts from the same snapshot, so nothing here
// should prompt, phone home, or try to restore a previous session.
user_pref("browser.startup.page", 1);
user_pref("browser.startup.homepage", "file:///usr/local/share/blankslate/start.html");
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("startup.homepage_welcome_url", "");
user_pref("startup.homepage_welcome_url.additional", "");
user_pref("browser.aboutwelcome.enabled", false);
user_pref("trailhead.firstrun.didSeeAboutWelcome", true);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.sessionstore.resume_from_crash", false);
user_pref("browser.sessionstore.max_resumed_crashes", 0);
user_pref("browser.sessionstore.resume_session_once", false);
user_pref("toolkit.startup.max_resumed_crashes", -1);
// A booted guest (--cold, or a kept context whose saved state is from another QEMU) finds
// the session Firefox had when its disk was saved: no "Open previous tabs?" bar for it.
user_pref("browser.startup.couldRestoreSession.count", -1);
user_pref("browser.tabs.warnOnClose", false);
user_pref("browser.warnOnQuit", false);
user_pref("browser.newtabpage.enabled", false);
user_pref("browser.newtab.preload", false);
user_pref("browser.newtabpage.activity-stream.feeds.telemetry", false);
user_pref("browser.newtabpage.activity-stream.telemetry", false);
user_pref("browser.ping-centre.telemetry", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.policy.firstRunURL", "");
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("toolkit.telemetry.archive.enabled", false);
user_pref("toolkit.telemetry.server", "");
user_pref("browser.crashReports.unsubmittedCheck.enabled", false);
user_pref("browser.crashReports.unsubmittedCheck.autoSubmit2", false);
user_pref("app.normandy.enabled", false);
user_pref("app.shield.optoutstudies.enabled", false);
user_pref("app.update.auto", false);
user_pref("app.update.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("extensions.pocket.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
// The network comes and goes with restores (the lease is applied after each one): never let
// Firefox decide it is offline from what it saw at snapshot time.
user_pref("network.manage-offline-status", false);
// TLS over TCP only: nss-reseed.so reseeds NSS at the first connect() after a restore, and
// QUIC's UDP sockets need not call connect().
user_pref("network.http.http3.enable", false);
// Writes land in the session overlay: keep the cache in RAM.
user_pref("browser.cache.disk.enable", false);
user_pref("browser.download.dir", "/home/browser/Downloads");
user_pref("browser.download.folderList", 2);
user_pref("browser.download.useDownloadDir", true);
// Downloads land in Downloads without a dialog (the app's Downloads panel takes them out);
// the panel must not cover the page in a kiosk.
user_pref("browser.download.always_ask_before_handling_new_types", false);
user_pref("browser.download.alwaysOpenPanel", false);
user_pref("browser.download.start_downloads_in_tmp_dir", false);
user_pref("media.hardware-video-decoding.enabled", false);
// Pages the app opens (blankslate-open) replace the current one: a kiosk has no tab strip,
// so tabs would pile up unseen; and the old page stays on screen until the new one paints.
user_pref("browser.link.open_newwindow.override.external", 1);
// `blankslate run --url data:…` is the user's own request, not a page's navigation.
user_pref("security.data_uri.block_toplevel_data_uri_navigations", false);
// No background connections: a throwaway session talks only to what the user opens. After a
// restore every overdue timer fires at once (the clock jumps), and Remote Settings alone then
// sent ~40 lookups of firefox.settings.services.mozilla.com per session. The snapshot's
// copies of those lists are as old as the image; image updates refresh them.
user_pref("services.settings.server", "data:,#remote-settings-disabled");
user_pref("browser.region.network.url", "");
user_pref("browser.region.update.enabled", false);
user_pref("browser.search.update", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("extensions.systemAddon.update.enabled", false);
user_pref("dom.push.connection.enabled", false);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.prefetch-next", false);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("browser.newtabpage.activity-stream.feeds.topsites", false);
user_pref("browser.topsites.contile.enabled", false);
