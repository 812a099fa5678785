"""What the control plane serves to browsers: static assets (vendored, no CDN) and, later, the console."""
