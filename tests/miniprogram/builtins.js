/**
 * miniprogram-simulate renders WeChat's built-in components (<image>, <input>,
 * <button>) as bare custom elements and drops their properties. These global stand-ins
 * keep the properties the tests and the screenshots look at as DOM attributes (an
 * image's src, an input's value, placeholder and name, a button's open-type, form-type
 * and disabled);
 * they do nothing else, and events still reach the page's handlers unchanged.
 */
const simulate = require('miniprogram-simulate')

function reflect(names) {
  return function () {
    const el = this.$$
    for (const name of names) {
      const value = this.data[name]
      const attr = name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
      if (value === false || value === '' || value === null || value === undefined) el.removeAttribute(attr)
      else el.setAttribute(attr, value === true ? '' : String(value))
    }
    if ('value' in this.data) el.setAttribute('data-value', this.data.value || '')
  }
}

function builtin(name, properties) {
  const names = Object.keys(properties)
  const update = reflect(names)
  simulate.load({
    id: name,
    tagName: `wx-${name}`,
    template: '<slot/>',
    properties,
    observers: { [names.join(', ')]: update },
    lifetimes: { attached: update },
  })
}

function install() {
  builtin('image', { src: String, mode: String })
  builtin('input', { value: String, placeholder: String, type: String, maxlength: Number, name: String })
  builtin('button', { openType: String, formType: String, disabled: Boolean })
}

module.exports = { install }
