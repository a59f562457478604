"""The web console's static files (``static/``): pages, scripts, styles, and the vendored
xterm.js, its fit add-on and asciinema-player (``static/vendor/``, see web/vendor.sh)."""
