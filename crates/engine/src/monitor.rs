pub struct Monitor;
